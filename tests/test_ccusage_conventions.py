"""sessionlake usage as a ccusage user runs it: HOME laid out as each agent lays it out, the CLI as a
subprocess, its JSON against what ccusage 20.0.24 printed for the same tree (tests/fixtures/ccusage-20.0.24,
see its README), the system time zone, every ccusage flag, and a status line whatever it is given.

Token counts sessionlake takes on purpose from ccusage (OpenCode's step parts, Qwen's cached input outside
the input, as Gemini's) are compared by shape only; everything else field for field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resources.config.settings import Settings
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.sources import found_sources, walk_all
from resources.state.store import StateStore
from tests.conftest import AGENT_SAMPLES, FIXTURES, SAMPLES, writable_copy

pytestmark = pytest.mark.integration  # the CLI as a subprocess

CCUSAGE = FIXTURES / "ccusage-20.0.24"
SAME_COUNTS = ("claude", "codex", "gemini")
"""Agents whose every count equals ccusage's; OpenCode and Qwen differ by documented counting rules."""
AGENT_REPORTS = [("codex", "daily"), ("codex", "monthly"), ("codex", "session"), ("gemini", "daily"),
                 ("gemini", "monthly"), ("gemini", "session"), ("opencode", "daily"), ("opencode", "weekly"),
                 ("opencode", "monthly"), ("opencode", "session"), ("qwen", "daily"), ("qwen", "monthly"),
                 ("qwen", "session"), ("claude", "daily"), ("claude", "monthly"), ("claude", "session")]


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    """A $HOME with every agent's samples where the agent keeps them (Claude Code in ~/.claude/projects)."""
    home = writable_copy(AGENT_SAMPLES, tmp_path / "user")
    writable_copy(SAMPLES, home / ".claude" / "projects")
    return home


def _env(tmp_path: Path, home: Path, tz: str = "UTC", **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SESSIONLAKE_") and k not in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "XDG_CONFIG_HOME",
                                                             "XDG_DATA_HOME", "GEMINI_CLI_HOME")}
    return {**env, "HOME": str(home), "SESSIONLAKE_HOME": str(tmp_path / "data"), "TZ": tz,
            "DAGSTER_HOME": str(tmp_path / "dagster"), **extra}


def _ingest(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The usage warehouse, filled from the folders the settings find in ``env`` (as a report finds them)."""
    for name in ("SESSIONLAKE_AGENTS", "SESSIONLAKE_SESSIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    files = list(walk_all(found_sources(settings)))
    run_processors([UsageProcessor()], settings.sessions_dir, StateStore.from_settings(settings), files=files)


def _cli(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def _json(env: dict, *args: str):
    result = _cli(env, "usage", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _rounded(obj):
    if isinstance(obj, float):
        return round(obj, 9)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items() if k != "responses"}  # responses: sessionlake's own
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _shape(obj):
    """Keys at every level, lists' lengths, and strings (ids, dates; a list of names as a set) as they are;
    numbers by type only."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items() if k != "responses"}
    if isinstance(obj, list):
        return sorted(obj) if all(isinstance(v, str) for v in obj) else [_shape(v) for v in obj]
    if isinstance(obj, bool | str) or obj is None:
        return obj
    return "number"


@pytest.fixture
def ingested(tmp_path, user_home, monkeypatch) -> dict:
    env = _env(tmp_path, user_home)
    _ingest(env, monkeypatch)
    return env


def test_each_agent_command_prints_ccusage_json_field_for_field(ingested):
    for agent, report in AGENT_REPORTS:
        expected = json.loads((CCUSAGE / f"{agent}-{report}.json").read_text())
        got = _json(ingested, agent, report)
        if agent in SAME_COUNTS:
            assert _rounded(got) == _rounded(expected), (agent, report)
        else:
            assert _shape(got) == _shape(expected), (agent, report)
    # ccusage's Codex ids: the rollout's path under sessions/, split into directory and file
    sessions = _json(ingested, "codex", "session")["sessions"]
    assert [s["sessionId"] for s in sessions] == [
        "2026/02/23/rollout-2026-02-23T13-19-38-019c8a70-dda7-7f33-98ea-f30553347322",
        "2026/02/23/rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff"]
    assert sessions[0]["directory"] == "2026/02/23" and sessions[0]["reasoningOutputTokens"] == 264


def test_the_all_agent_reports_have_ccusage_shapes(ingested):
    for report in ("daily", "monthly", "session"):
        expected = json.loads((CCUSAGE / f"all-{report}.json").read_text())
        assert _shape(_json(ingested, report)) == _shape(expected), report


def test_days_are_in_the_system_zone_and_local_names_it(tmp_path, user_home, monkeypatch):
    env = _env(tmp_path, user_home, tz="Asia/Kolkata")
    _ingest(env, monkeypatch)
    # the later Codex session runs past midnight in Kolkata: two days there, one in UTC
    expected = json.loads((CCUSAGE / "codex-daily.Asia-Kolkata.json").read_text())
    assert [d["date"] for d in expected["daily"]] == ["2026-02-23", "2026-02-24"]
    assert _rounded(_json(env, "codex", "daily")) == _rounded(expected)
    assert _rounded(_json(env, "codex", "daily", "-z", "local")) == _rounded(expected)
    assert [d["date"] for d in _json(env, "codex", "daily", "-z", "UTC")["daily"]] == ["2026-02-23"]
    every = json.loads((CCUSAGE / "all-daily.Asia-Kolkata.json").read_text())
    assert [d["period"] for d in _json(env, "daily")["daily"]] == [d["period"] for d in every["daily"]]
    # --since/--until are days in that zone too
    assert [d["date"] for d in _json(env, "codex", "daily", "--since", "20260224")["daily"]] == ["2026-02-24"]
    bad = _cli(env, "usage", "-z", "Mars/Olympus")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


SESSION = "d3ad4cdc-5657-435d-98fa-0035d53e383d"
# Every flag ccusage 20.0.24 takes, per report, as `ccusage <report> --help` lists it (and its hidden ones)
COMMON = [["-O"], ["--offline"], ["--no-offline"], ["--compact"], ["--color"], ["--no-color"], ["-d"], ["--debug"],
          ["--debug-samples", "3"], ["--config", "/nonexistent.json"], ["--single-thread"], ["--no-cost"],
          ["-m", "calculate"], ["--mode", "display"], ["-o", "desc"], ["--order", "asc"], ["-b"], ["--breakdown"],
          ["-s", "20250101"], ["-u", "2027-01-01"], ["-z", "UTC"], ["--timezone", "local"], ["-j"]]
PER_REPORT = {
    ("daily",): [["--last", "2"], ["--by-agent"], ["--all"], ["--sections", "daily,session"]],
    ("session",): [["--by-agent"], ["--all"], ["--sections", "monthly"], ["--id", SESSION]],
    ("blocks",): [["-a"], ["--active"], ["-r"], ["--recent"], ["-t", "1000"], ["--token-limit", "max"],
                  ["-n", "3"], ["--session-length", "5"]],
    ("claude", "daily"): [["-i"], ["--instances"], ["-p", "Users-chip-dev-ai-music"],
                          ["--project", "-Users-chip-dev-ai-music"], ["--project-aliases", "a=b"], ["--last", "1"]],
    ("claude", "weekly"): [["-w", "monday"], ["--start-of-week", "friday"], ["--last", "3"]],
    ("claude", "session"): [["-i", SESSION], ["--id", SESSION]],
    ("codex", "daily"): [["--speed", "fast"], ["--last", "1"]],
    ("codex", "session"): [["--speed", "standard"]],
    ("gemini", "monthly"): [["--last", "2"]],
}
MISPLACED = {
    ("daily",): [["--active"], ["--id", "x"], ["-w", "monday"], ["--speed", "fast"], ["-n", "3"]],
    ("session",): [["--last", "1"], ["-a"], ["--instances"]],
    ("blocks",): [["--by-agent"], ["--sections", "daily"], ["--last", "1"], ["--instances"], ["-p", "x"]],
    ("claude", "daily"): [["--active"], ["--by-agent"], ["--sections", "daily"]],
    ("codex", "session"): [["-p", "x"], ["--last", "1"], ["--by-agent"], ["--id", "x"]],
    ("qwen", "daily"): [["--speed", "fast"], ["--instances"], ["-a"]],
}


def test_every_ccusage_flag_is_taken_and_a_misplaced_one_is_an_error(ingested):
    for report, flag_sets in PER_REPORT.items():  # together where they combine: each process costs a second
        lasts = [one for one in flag_sets if one[0] == "--last"]
        others = [flag for one in flag_sets if one[0] != "--last" for flag in one]
        common = [flag for one in COMMON for flag in one]
        for flags in (common, *lasts, *([others] if others else [])):
            result = _cli(ingested, "usage", *report, *flags, "--json")
            assert result.returncode == 0, (report, flags, result.stderr)
    for report, flag_sets in MISPLACED.items():
        for flags in flag_sets:
            result = _cli(ingested, "usage", *report, *flags)
            assert result.returncode == 2 and "does not apply" in result.stderr, (report, flags, result.stderr)
    assert "--offline" in _cli(ingested, "usage", "--help").stdout  # listed, and said to be ignored
    for args, message in ((["--since", "20250610", "--until", "20250601"], "later than"),
                          (["--last", "1", "--since", "20250101"], "--last"), (["--last", "0"], "--last"),
                          (["codex", "blocks"], "codex REPORT")):
        result = _cli(ingested, "usage", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_no_cost_sections_last_and_project_rows(ingested):
    no_cost = _json(ingested, "codex", "daily", "--no-cost")
    assert "costUSD" not in no_cost["daily"][0] and "costUSD" not in no_cost["totals"]
    assert "cost" not in _json(ingested, "claude", "daily", "--no-cost")["daily"][0]["modelBreakdowns"][0]
    sections = _json(ingested, "daily", "--sections", "daily,monthly")
    assert sorted(sections) == ["daily", "monthly", "totals"]
    assert sections["totals"] == _json(ingested, "monthly")["totals"]
    assert _json(ingested, "claude", "daily", "--last", "3")["daily"] == []  # the samples are from 2025
    for args in (["codex", "daily", "-b"], ["codex", "session", "--no-cost"], ["blocks", "--no-cost"],
                 ["session", "--id", SESSION, "--no-cost"], ["daily", "--sections", "daily,session"]):
        table = _cli(ingested, "usage", *args)  # the tables print every shape, with or without costs
        assert table.returncode == 0 and "total" in table.stdout, (args, table.stderr)
    rows = _json(ingested, "claude", "daily", "--project", "-Users-chip-dev-ai-music")["daily"]
    assert [r["project"] for r in rows] == ["-Users-chip-dev-ai-music"] * 2  # as ccusage claude daily -p


def _claude_line(ts: datetime, msg: str, **extra) -> str:
    model = extra.pop("model", "claude-sonnet-4-20250514")
    return json.dumps({"type": "assistant", "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "sessionId": "live",
                       "requestId": f"r-{msg}", "message": {"id": msg, "model": model, "usage": {
                           "input_tokens": 100, "output_tokens": 1000}}, **extra}, separators=(",", ":"))


def test_utc_days_split_at_midnight_as_in_any_other_zone(tmp_path, user_home, monkeypatch):
    # a UTC daily report groups by integer day numbers; Etc/Greenwich (UTC too) goes through the zone conversion
    live = user_home / ".claude" / "projects" / "-home-me-midnight" / "live.jsonl"
    live.parent.mkdir(parents=True)
    times = [datetime(2026, 1, 14, 23, 59, 59, 999000, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC),
             datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]
    live.write_text("".join(_claude_line(ts, f"m{i}") + "\n" for i, ts in enumerate(times)))
    env = _env(tmp_path, user_home)
    _ingest(env, monkeypatch)
    days = {d["period"]: d["totalTokens"] for d in _json(env, "daily", "--project", "-home-me-midnight")["daily"]}
    assert days == {"1969-12-31": 1100, "2026-01-14": 1100, "2026-01-15": 1100}
    for zone in ("GMT", "Etc/Greenwich"):
        assert _json(env, "daily", "-z", zone) == _json(env, "daily")


def test_blocks_are_claude_codes_windows_over_the_whole_history_then_filtered(tmp_path, user_home, monkeypatch):
    env = _env(tmp_path, user_home)
    _ingest(env, monkeypatch)
    expected = json.loads((CCUSAGE / "claude-blocks.json").read_text())["blocks"]
    report = _json(env, "blocks")  # no --agent: Claude Code's alone, though Codex and Gemini have rows
    assert _rounded(report["blocks"]) == _rounded(expected)
    # a filter keeps the windows ccusage built over everything: the 10th's block still starts at 12:00
    only_10th = _json(env, "blocks", "--since", "20250610")
    assert [b["id"] for b in only_10th["blocks"]] == [b["id"] for b in expected if b["startTime"] >= "2025-06-10"]
    assert only_10th["totals"]["totalTokens"] == sum(b["totalTokens"] for b in only_10th["blocks"])
    assert only_10th["totals"]["totalCost"] == pytest.approx(sum(b["costUSD"] for b in only_10th["blocks"]))
    codex = _json(env, "blocks", "--agent", "codex")
    assert {m for b in codex["blocks"] for m in b["models"]} == {"gpt-5.3-codex"}
    # --active shows the active block and totals of that block alone
    live = user_home / ".claude" / "projects" / "-home-me-live" / "live.jsonl"
    live.parent.mkdir(parents=True)
    now = datetime.now(UTC)
    live.write_text(_claude_line(now - timedelta(minutes=30), "a") + "\n" + _claude_line(now, "b") + "\n")
    _ingest(env, monkeypatch)
    active = _json(env, "blocks", "--active", "-t", "1000")
    [block] = active["blocks"]
    assert block["isActive"] and active["totals"]["totalTokens"] == block["totalTokens"] == 2200
    assert block["tokenLimitStatus"]["limit"] == 1000 and block["tokenLimitStatus"]["status"] == "exceeds"


def test_a_model_whose_file_cost_is_counted_gets_no_price_warning(tmp_path, user_home, monkeypatch):
    path = user_home / ".claude" / "projects" / "-home-me-old" / "old.jsonl"
    path.parent.mkdir(parents=True)
    ts = datetime(2025, 1, 2, 10, tzinfo=UTC)
    path.write_text(_claude_line(ts, "m1", model="claude-mystery-1", costUSD=0.5) + "\n"
                    + _claude_line(ts, "m2", model="claude-unknown-2") + "\n")
    env = _env(tmp_path, user_home)
    _ingest(env, monkeypatch)
    result = _cli(env, "usage", "claude", "daily", "--since", "20250102", "--until", "20250102", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["totals"]["unpricedModels"] == ["claude-unknown-2"]
    assert "claude-unknown-2" in result.stderr and "claude-mystery-1" not in result.stderr


def test_statusline_prints_a_line_and_exits_0_whatever_it_is_given(tmp_path, user_home):
    env = _env(tmp_path, user_home)
    transcript = next((user_home / ".claude" / "projects").rglob("*.jsonl"))
    payload = json.dumps({"session_id": transcript.stem, "transcript_path": str(transcript),
                          "model": {"id": "claude-sonnet-4-20250514", "display_name": "Sonnet 4"}})
    for flags in ([], ["--offline"], ["-O"], ["--no-offline"], ["-B", "emoji"], ["--visual-burn-rate", "emoji-text"],
                  ["--context-low-threshold", "40"], ["--context-medium-threshold", "90"], ["--cost-source", "both"],
                  ["--cache"], ["--no-cache"], ["--refresh-interval", "5"], ["-z", "local"], ["--config", "x.json"],
                  ["-d"], ["--agent", "codex"]):
        result = _cli(env, "statusline", *flags, stdin=payload)
        assert result.returncode == 0 and result.stdout.startswith("🤖 Sonnet 4 | 💰 "), (flags, result)
    for flags, stdin in (([], ""), ([], "not json"), ([], "[1, 2]"), (["--bogus"], payload), (["-B", "loud"], payload),
                         (["--refresh-interval", "soon"], payload), (["-z", "Mars/Olympus"], payload)):
        result = _cli(env, "statusline", *flags, stdin=stdin)
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 1, (flags, result)
        assert result.stdout.strip(), (flags, result)
    broken = _cli({**env, "SESSIONLAKE_HOME": str(transcript)}, "statusline", stdin=payload)
    assert broken.returncode == 0 and "usage unavailable" in broken.stdout


def test_statusline_minutes_left_are_floored_and_the_burn_status_shown():
    from pipelines.cli.statusline import format_line
    from resources.usage.now import LiveUsage

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    block = {"costUSD": 1.0, "endTime": "2026-01-01T14:45:59.000Z",
             "burnRate": {"costPerHour": 2.0, "tokensPerMinuteForIndicator": 3000}}
    line = format_line({"model": {"display_name": "Opus"}}, LiveUsage(0.5, 1.5, block, None), now, burn="emoji-text")
    assert "$1.00 block (2h 45m left)" in line  # 2 h 45 min 59 s: ccusage floors
    assert "🔥 $2.00/hr ⚠️ (Moderate)" in line


def test_a_data_home_that_is_a_file_is_one_line_and_exit_2(tmp_path, user_home):
    afile = tmp_path / "afile"
    afile.write_text("")
    result = _cli({**_env(tmp_path, user_home), "SESSIONLAKE_HOME": str(afile)}, "usage", "daily")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "SESSIONLAKE_HOME" in result.stderr


def test_every_ccusage_folder_and_variable_is_read(tmp_path, user_home):
    """The same sessions spread over the folders and variables ccusage reads give ccusage's same report
    (each report reads the folders itself: no ingest first)."""
    claude = json.loads((CCUSAGE / "claude-daily.json").read_text())
    config = user_home / ".config" / "claude" / "projects"
    files = sorted((user_home / ".claude" / "projects").rglob("*.jsonl"))
    for path in files[:2]:  # half of the sessions where newer Claude Code writes them
        target = config / path.relative_to(user_home / ".claude" / "projects")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    env = _env(tmp_path / "both", user_home)
    assert _rounded(_json(env, "claude", "daily")) == _rounded(claude)
    # CLAUDE_CONFIG_DIR: a comma-separated list of config folders, or of their projects/ folders
    both = f"{user_home / '.config/claude'}, {user_home}/.claude/projects"
    listed = _env(tmp_path / "listed", user_home, CLAUDE_CONFIG_DIR=both)
    assert _rounded(_json(listed, "claude", "daily")) == _rounded(claude)
    only = _env(tmp_path / "only", user_home, CLAUDE_CONFIG_DIR=str(user_home / ".config/claude"))
    assert _json(only, "claude", "daily")["totals"]["totalTokens"] < claude["totals"]["totalTokens"]
    wrong = _cli(_env(tmp_path / "wrong", user_home, CLAUDE_CONFIG_DIR=str(tmp_path / "nowhere")), "usage")
    assert wrong.returncode == 2 and "CLAUDE_CONFIG_DIR" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    # the other agents' variables, each a comma-separated list, the data moved out of the default folders
    moved = tmp_path / "moved"
    rollouts = sorted((user_home / ".codex" / "sessions").rglob("*.jsonl"))
    for i, path in enumerate(rollouts):
        target = moved / f"codex{i}" / "sessions" / path.relative_to(user_home / ".codex" / "sessions")
        target.parent.mkdir(parents=True)
        path.rename(target)
    (user_home / ".gemini").rename(moved / "gemini")
    (user_home / ".local" / "share" / "opencode").rename(moved / "opencode")
    (user_home / ".qwen").rename(moved / "qwen")
    variables = {"CODEX_HOME": f"{moved / 'codex0'},{moved / 'codex1'}",
                 "GEMINI_DATA_DIR": str(moved / "gemini" / "tmp"),
                 "OPENCODE_DATA_DIR": f"{tmp_path / 'absent'},{moved / 'opencode'}",
                 "QWEN_DATA_DIR": str(moved / "qwen")}
    env = _env(tmp_path / "agents", user_home, **variables)
    for agent in ("codex", "gemini"):
        expected = json.loads((CCUSAGE / f"{agent}-session.json").read_text())
        assert _rounded(_json(env, agent, "session")) == _rounded(expected), agent
    for agent in ("opencode", "qwen"):
        expected = json.loads((CCUSAGE / f"{agent}-session.json").read_text())
        assert _shape(_json(env, agent, "session")) == _shape(expected), agent
