"""A report whose inputs have not changed is printed again from ``$SESSIONLAKE_HOME/reports/``, without DuckDB
(resources/usage/report_cache.py), and is exactly what computing it prints; anything it depends on that
changes makes the next report compute it again. Each report is a fresh ``sessionlake`` process over a
$HOME laid out as the agents lay it out (the fixture of tests/test_fresh_reports.py)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import resources.usage.report_kinds
from resources.state.store import StateStore
from resources.usage.report_cache import KEEP, CachedReport, ReportCache
from tests.conftest import SAMPLES, writable_copy
from tests.test_fresh_reports import REPO, _append_response, _claude_session, _env

pytestmark = pytest.mark.integration


@pytest.fixture
def user(agent_home: Path) -> Path:
    """A $HOME with every agent's samples where that agent keeps them, Claude Code's included."""
    writable_copy(SAMPLES, agent_home / ".claude" / "projects")
    return agent_home

_RUN = """import sys
{patch}from pipelines.cli.main import main
status = main(sys.argv[2:])
sys.stdout.flush()
with open(sys.argv[1], "w") as f:
    f.write(repr(sorted({{m.split(".")[0] for m in sys.modules}} & {{"duckdb", "pyarrow", "numpy"}})))
sys.exit(status)
"""
_UNREADABLE = """import resources.ingest.plan as plan
real = plan.compute_file_hash
def unreadable(path, size=None):
    if str(path).endswith({name!r}):
        raise PermissionError(13, "Permission denied", str(path))
    return real(path, size)
plan.compute_file_hash = unreadable
"""


def _report(user: Path, *argv: str, env: dict | None = None, patch: str = "") -> tuple[tuple, list[str]]:
    """``((exit status, stdout, stderr), heavy modules loaded)`` of ``sessionlake usage ARGV`` in a fresh process."""
    loaded = user / "loaded.txt"
    done = subprocess.run([sys.executable, "-c", _RUN.format(patch=patch), str(loaded), "usage", *argv],
                          env={**_env(user), **(env or {})}, capture_output=True, text=True, timeout=120, cwd=REPO)
    return (done.returncode, done.stdout, done.stderr), eval(loaded.read_text())


def _stored(user: Path) -> list[Path]:
    return sorted(p for p in (user / ".sessionlake" / "reports").glob("*.json") if p.name != "refreshed.json")


@pytest.mark.parametrize("argv", [
    ("daily",),
    ("daily", "--json"),
    ("weekly", "--breakdown", "-z", "Asia/Kolkata"),
    ("monthly", "--json", "--by-agent", "--no-cost"),
    ("session", "--json"),
    ("claude", "daily", "--json", "--instances"),
    ("codex", "daily", "--json"),
    ("model",),
    ("daily", "--sections", "daily,monthly,session", "--json"),
    ("daily", "--last", "3", "--json"),
    ("session", "--id", "no-such-session"),
])
def test_a_stored_report_is_the_computed_one_byte_for_byte(user, argv):
    first, loaded = _report(user, *argv)
    assert "duckdb" in loaded and first[0] in (0, 1), first[2]
    again, loaded = _report(user, *argv)
    assert loaded == [] and again == first  # printed from the store: no DuckDB, no pyarrow
    computed, loaded = _report(user, *argv, env={"SESSIONLAKE_REPORT_CACHE": "off"})
    assert "duckdb" in loaded and computed == first


def test_entries_are_private_and_bounded(user, tmp_path):
    _report(user, "daily")
    folder = user / ".sessionlake" / "reports"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    cache = ReportCache(tmp_path / "many")
    for n in range(KEEP + 5):
        cache.put(f"q{n}", "listing", [None, None], CachedReport(f"{n}\n", "", 0))
    kept = {p.stem for p in (tmp_path / "many").glob("q*.json")}
    assert len(kept) == KEEP and "q0" not in kept and f"q{KEEP + 4}" in kept


def test_a_report_is_printed_when_it_cannot_be_stored(user):
    (user / ".sessionlake").mkdir(mode=0o700)
    (user / ".sessionlake" / "reports").write_text("a file where the folder would be")
    first, _ = _report(user, "daily")
    assert first[0] == 0 and "total" in first[1], first[2]
    assert _report(user, "daily") == (first, ["duckdb"])


def _totals(result: tuple) -> dict:
    assert result[0] == 0, result[2]
    return json.loads(result[1])["totals"]


def _changed_session(user: Path) -> None:
    _append_response(_claude_session(user), "msg_cache_append", 900)


def _new_session(user: Path) -> None:
    new = _claude_session(user).with_name("0a1b2c3d-new.jsonl")
    _append_response(new, "msg_cache_new", 900)


def _deleted_session(user: Path) -> None:
    _claude_session(user).unlink()


@pytest.mark.parametrize("change, counted", [(_changed_session, True), (_new_session, True),
                                             (_deleted_session, False)])  # the warehouse keeps what was read
def test_a_changed_session_file_is_read_before_the_next_report(user, change, counted):
    before, _ = _report(user, "daily", "--json")
    _report(user, "daily", "--json")
    change(user)
    after, loaded = _report(user, "daily", "--json")
    assert "duckdb" in loaded and (after != before) == counted
    computed, _ = _report(user, "daily", "--json", env={"SESSIONLAKE_REPORT_CACHE": "off"})
    assert computed == after


def test_another_zone_price_file_or_version_computes_the_report_again(user, tmp_path):
    argv = ("daily", "--json")
    base, _ = _report(user, *argv)
    for env in ({"TZ": "Pacific/Kiritimati"}, {"SESSIONLAKE_PRICE_FILE": str(tmp_path / "prices.json")}):
        if "SESSIONLAKE_PRICE_FILE" in env:
            (tmp_path / "prices.json").write_text(json.dumps({"models": {"claude-sonnet-4-20250514": {
                "input": 1, "output": 1, "cache_write": 1, "cache_read": 1}}}))
        changed, loaded = _report(user, *argv, env=env)
        assert "duckdb" in loaded and changed != base
        assert _report(user, *argv, env=env) == (changed, [])
    price = tmp_path / "prices.json"
    price.write_text(price.read_text().replace('"output": 1', '"output": 2'))  # the same file, edited
    edited, loaded = _report(user, *argv, env={"SESSIONLAKE_PRICE_FILE": str(price)})
    assert "duckdb" in loaded and _totals(edited)["totalCost"] > _totals(changed)["totalCost"]

    assert _report(user, *argv)[0] == base  # the warehouse was re-costed for each price table: computed again
    assert _report(user, *argv) == (base, [])
    source = Path(resources.usage.report_kinds.__file__)  # an upgrade, or an edit, of sessionlake's code
    st = source.stat()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        upgraded, loaded = _report(user, *argv)
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "duckdb" in loaded and upgraded == base
    packages = tmp_path / "site-packages"
    packages.mkdir()
    env = {"PYTHONPATH": str(packages)}
    _report(user, *argv, env=env)
    assert _report(user, *argv, env=env)[1] == []
    (packages / "newly_installed.py").write_text("")  # a package installed beside the dependencies
    assert "duckdb" in _report(user, *argv, env=env)[1]


def test_a_warehouse_written_by_another_process_is_read_again(user):
    before, _ = _report(user, "daily", "--json")
    _report(user, "daily", "--json")
    state = StateStore(user / ".sessionlake" / "state.duckdb")
    with state.connect() as conn:
        conn.execute("DELETE FROM usage_messages WHERE agent = 'claude'")
    after, loaded = _report(user, "daily", "--json")
    assert "duckdb" in loaded and _totals(after)["totalTokens"] < _totals(before)["totalTokens"]
    assert _report(user, "daily", "--json") == (after, [])


def test_unchanged_files_are_read_again_into_a_warehouse_another_process_emptied(user):
    """The refresh skips asking which files changed only while the warehouse is the one it left."""
    before, _ = _report(user, "daily", "--json")
    with StateStore(user / ".sessionlake" / "state.duckdb").connect() as conn:
        conn.execute("DELETE FROM usage_messages")
        conn.execute("DELETE FROM session_processor_state")
    weekly, loaded = _report(user, "weekly", "--json")  # another question, the same session files
    assert "duckdb" in loaded and _totals(weekly) == _totals(before)
    assert _report(user, "daily", "--json")[0] == before


def test_a_report_with_a_file_error_or_of_blocks_is_never_stored(user):
    name = _claude_session(user).name
    failed, _ = _report(user, "daily", patch=_UNREADABLE.format(name=name))
    assert failed[0] == 1 and "Permission denied" in failed[2] and "retried next time" in failed[2]
    assert _stored(user) == []
    again, loaded = _report(user, "daily", patch=_UNREADABLE.format(name=name))
    assert "duckdb" in loaded and again[0] == 1 and "Permission denied" in again[2]
    read, loaded = _report(user, "daily")
    assert "duckdb" in loaded and read[0] == 0 and read[1] != failed[1]

    blocks, _ = _report(user, "blocks", "--json")
    assert blocks[0] == 0, blocks[2]
    stored = _stored(user)
    assert "duckdb" in _report(user, "blocks", "--json")[1] and _stored(user) == stored
