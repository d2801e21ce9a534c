"""``sessionlake statusline`` as Claude Code runs it: a fresh process, the hook JSON on stdin, one line out.

Prices (per million tokens): claude-sonnet-4 input 3, output 15, cache write 3.75, cache read 0.30, so
each response below (10 in, 1,000 out, 2,000 cache write, 20,000 cache read) costs $0.0285.
"""

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb
import orjson
import pytest

from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors, top_up_files
from resources.ingest.session_files import session_file_at

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-20250514"
COST = (10 * 3 + 1000 * 15 + 2000 * 3.75 + 20000 * 0.3) / 1e6  # 0.0285


def _response(session, n, ts):
    return orjson.dumps({
        "type": "assistant", "uuid": f"{session}-{n}", "sessionId": session, "isSidechain": False,
        "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "requestId": f"r-{session}-{n}",
        "message": {"id": f"m-{session}-{n}", "model": MODEL, "content": [{"type": "text", "text": "ok"}],
                    "usage": {"input_tokens": 10, "output_tokens": 1000, "cache_creation_input_tokens": 2000,
                              "cache_read_input_tokens": 20000}}}) + b"\n"


def _session(root, project, session, times):
    path = root / project / f"{session}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        for n, ts in enumerate(times):
            f.write(_response(session, f"{len(path.read_bytes())}-{n}", ts))
    return path


def _payload(path, session, **extra):
    return json.dumps({"session_id": session, "transcript_path": str(path), "cwd": "/w",
                       "model": {"id": MODEL, "display_name": "Sonnet 4"}, **extra})


def _midday_zone(now):
    """A fixed-offset zone where ``now`` is about noon, so "today" holds the last hours at any UTC time."""
    return f"Etc/GMT{now.hour - 12:+d}"  # Etc/GMT+N is N hours behind UTC


def _statusline(settings, stdin, *args, zone="UTC"):
    env = {**os.environ, "SESSIONLAKE_HOME": str(settings.home), "SESSIONLAKE_SESSIONS_DIR": str(settings.sessions_dir)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", "statusline", "-z", zone, *args], input=stdin,
                          env=env, capture_output=True, text=True, timeout=60)


def _keys(state):
    with state.connect() as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT session_key FROM usage_messages").fetchall()}


def test_reads_every_changed_session_first_and_prints_ccusage_line(settings, state):
    now = datetime.now(UTC)
    root = settings.sessions_dir
    live = _session(root, "-w-app", "live", [now - timedelta(minutes=40), now - timedelta(minutes=10)])
    _session(root, "-w-app", "other", [now - timedelta(minutes=5)])  # never ingested: counted today all the same
    zone = _midday_zone(now)
    result = _statusline(settings, _payload(live, "live"), zone=zone)
    assert result.returncode == 0, result.stderr
    # the live session's two responses $0.057; with the other one $0.0855 today and in the active block,
    # over the 35 minutes from the first response to the last
    assert re.fullmatch(r"🤖 Sonnet 4 \| 💰 \$0\.06 session / \$0\.09 today / \$0\.09 block \(\dh \d+m left\) "
                        r"\| 🔥 \$0\.15/hr \| 🧠 22,010 \(11%\)", result.stdout.strip()), result.stdout
    assert {"-w-app/live.jsonl", "-w-app/other.jsonl"} < _keys(state)  # with the samples: every file

    with open(live, "ab") as f:
        f.write(_response("live", "late", datetime.now(UTC)))
    grown = _statusline(settings, _payload(live, "live"), zone=zone)
    assert "💰 $0.09 session / $0.11 today / $0.11 block" in grown.stdout, grown.stdout
    with state.connect() as conn:
        assert conn.execute("SELECT count(*) FROM usage_messages WHERE project = '-w-app'").fetchall()[0][0] == 4


def test_top_up_reads_a_grown_file_from_its_stored_offset(settings, state):
    now = datetime.now(UTC)
    path = _session(settings.sessions_dir, "-w-app", "s", [now - timedelta(minutes=3)])
    file = session_file_at(settings.sessions_dir, path)
    with state.connect() as conn:
        first = top_up_files(UsageProcessor(), [file], conn)
        assert (first["processed"], first["bytes_read"]) == (1, path.stat().st_size)
        size = path.stat().st_size
        with open(path, "ab") as f:
            f.write(_response("s", "next", now))
        second = top_up_files(UsageProcessor(), [session_file_at(settings.sessions_dir, path)], conn)
        assert (second["processed"], second["bytes_read"]) == (1, path.stat().st_size - size)
        unchanged = top_up_files(UsageProcessor(), [session_file_at(settings.sessions_dir, path)], conn)
        assert (unchanged["processed"], unchanged["skipped"], unchanged["bytes_read"]) == (0, 1, 0)
        assert conn.execute("SELECT count(*) FROM usage_messages").fetchall()[0][0] == 2
    # a run afterwards has nothing left to do for the usage processor
    after = run_processors([UsageProcessor()], settings.sessions_dir, state, projects={"-w-app"})["usage"]
    assert (after["scanned"], after["processed"]) == (1, 0)
    assert session_file_at(settings.sessions_dir, settings.home / "elsewhere.jsonl") is None


def test_claude_codes_context_window_and_no_active_block(settings):
    old = datetime.now(UTC) - timedelta(days=2)
    path = _session(settings.sessions_dir, "-w-app", "old", [old])
    window = {"context_window_size": 1_000_000, "used_percentage": 7,
              "current_usage": {"input_tokens": 100, "cache_creation_input_tokens": 900,
                                "cache_read_input_tokens": 69_000, "output_tokens": 50}}
    result = _statusline(settings, _payload(path, "old", context_window=window, effort={"level": "high"},
                                            cost={"total_cost_usd": 1.234}))
    assert result.stdout.strip() == ("🤖 Sonnet 4 (high) | 💰 $1.23 session / $0.00 today / No active block "
                                     "| 🧠 70,000 (7%)")
    ours = _statusline(settings, _payload(path, "old", cost={"total_cost_usd": 1.234}), "--cost-source", "sessionlake")
    assert "💰 $0.03 session" in ours.stdout and "🧠 22,010 (11%)" in ours.stdout


def test_bad_input_or_a_locked_warehouse_gives_a_fallback_and_exit_0(settings, state):
    now = datetime.now(UTC)
    path = _session(settings.sessions_dir, "-w-app", "s", [now])
    for stdin in ("not json", "[1, 2]"):
        result = _statusline(settings, stdin)
        assert (result.returncode, result.stdout.strip()) == (0, "💰 usage unavailable")
        assert "sessionlake statusline:" in result.stderr
    with state.connect():
        pass  # create the warehouse
    holder = duckdb.connect(str(settings.state_path))  # another process would hold it the same way
    try:
        locked = _statusline(settings, _payload(path, "s"), "--no-cache")
    finally:
        holder.close()
    # what is stored (nothing yet), said to be from a held warehouse
    assert (locked.returncode, locked.stdout.strip()) == (
        0, "🤖 Sonnet 4 | 💰 $0.00 session / $0.00 today / No active block | 🧠 N/A")
    assert "held by another process" in locked.stderr


def test_an_unchanged_refresh_reuses_the_line_without_the_warehouse(settings, state):
    now = datetime.now(UTC)
    path = _session(settings.sessions_dir, "-w-app", "s", [now - timedelta(minutes=1)])
    first = _statusline(settings, _payload(path, "s"), "--refresh-interval", "60")
    assert "$0.03 session" in first.stdout
    holder = duckdb.connect(str(settings.state_path))
    try:
        cached = _statusline(settings, _payload(path, "s"), "--refresh-interval", "60")
        with open(path, "ab") as f:
            f.write(_response("s", "new", now))
        changed = _statusline(settings, _payload(path, "s"), "--refresh-interval", "60")
    finally:
        holder.close()
    assert cached.stdout == first.stdout and "held" not in cached.stderr
    # transcript changed: the warehouse is needed, and while it is held the line shows what is stored
    assert "💰 $0.03 session / $0.03 today" in changed.stdout and "held by another process" in changed.stderr
    assert oct((settings.home / "statusline").stat().st_mode & 0o777) == "0o700"


def test_statusline_imports_neither_dagster_nor_lancedb(settings):
    path = _session(settings.sessions_dir, "-w-app", "s", [datetime.now(UTC)])
    env = {**os.environ, "SESSIONLAKE_HOME": str(settings.home), "SESSIONLAKE_SESSIONS_DIR": str(settings.sessions_dir)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipelines.cli.main", "statusline"],
                            input=_payload(path, "s"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "💰" in result.stdout
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()
               if line.startswith("import time:")}
    assert "duckdb" in modules and not modules & {"dagster", "lancedb", "lance"}


def test_the_day_and_session_cost_are_the_reports_exact_sums_whatever_the_row_order(tmp_path):
    import random
    from datetime import UTC, datetime, timedelta

    from resources.usage.now import live_usage
    from resources.usage.report_query import ReportFilter
    from resources.usage.reports import usage_report
    from tests.test_usage import _shuffled_warehouse

    rng = random.Random(11)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    rows = [(f"k{i}", day + timedelta(seconds=rng.randrange(86400)), "s1", "-p", "model-1",
             rng.random() * 10 ** rng.randrange(-4, 3), i) for i in range(300)]
    seen = set()
    for seed in range(3):
        with _shuffled_warehouse(tmp_path / f"state-{seed}.duckdb", rows, seed).connect() as conn:
            live = live_usage(conn, "s1", day, day + timedelta(days=1), day + timedelta(days=1), mode="display")
            report = usage_report(conn, "daily", ReportFilter(mode="display"))
        assert live.day_cost == live.session_cost == report["totals"]["totalCost"]
        seen.add(live.day_cost)
    assert len(seen) == 1
