"""Reports read their own writes: ``sessionlake usage`` and ``statusline`` bring the warehouse up to date
from every agent's files first (resources/usage/refresh.py), as a user runs them: a fresh process, with
``HOME`` pointing at a tree laid out the way each agent lays it out, and no ``sessionlake ingest`` before."""

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import pytest

from bench.corpus import generate_corpus
from tests.conftest import AGENT_SAMPLES, SAMPLES, writable_copy
from tests.test_sources import EXPECTED
from tests.test_usage import SAMPLE_TOTALS
from tests.warehouse_holder import held_by_another_process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
OTHER_AGENTS_INPUT = sum(e[3] for e in EXPECTED)
OTHER_AGENTS_OUTPUT = sum(e[6] for e in EXPECTED)
AGENT_VARIABLES = ("SESSIONLAKE_AGENTS", "SESSIONLAKE_HOME", "SESSIONLAKE_SESSIONS_DIR", "SESSIONLAKE_CODEX_DIR",
                   "SESSIONLAKE_GEMINI_DIR", "SESSIONLAKE_OPENCODE_DIR", "SESSIONLAKE_QWEN_DIR", "CODEX_HOME",
                   "GEMINI_CLI_HOME", "XDG_DATA_HOME", "CLAUDE_CONFIG_DIR", "DAGSTER_HOME")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A $HOME with Claude Code's samples in ~/.claude/projects and the other agents' where they keep them."""
    user = writable_copy(AGENT_SAMPLES, tmp_path / "user")
    writable_copy(SAMPLES, user / ".claude" / "projects")
    return user


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AGENT_VARIABLES}
    return {**env, "HOME": str(home), "TZ": "UTC"}


def _sessionlake(home: Path, *args: str, stdin: str | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=_env(home), input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _totals(home: Path, *args: str) -> dict:
    result = _sessionlake(home, "usage", "daily", "--json", *args)
    assert result.returncode == 0, result.stderr
    return _rounded(json.loads(result.stdout)["totals"])


def _rounded(totals: dict) -> dict:
    """Totals with the cost to the micro-dollar: DuckDB may sum the same costs in another order."""
    return {**totals, "totalCost": round(totals["totalCost"], 6)}


def _claude_session(home: Path) -> Path:
    return next((home / ".claude" / "projects").rglob("fed8ce56*.jsonl"))


def _append_response(path: Path, msg_id: str, output: int) -> None:
    line = {"type": "assistant", "uuid": f"u-{msg_id}", "sessionId": "fed8ce56", "isSidechain": False,
            "timestamp": "2025-06-10T13:00:00.000Z", "requestId": f"r-{msg_id}",
            "message": {"id": msg_id, "model": "claude-sonnet-4-20250514", "content": [{"type": "text", "text": "ok"}],
                        "usage": {"input_tokens": 7, "output_tokens": output, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}}}
    with open(path, "ab") as f:
        f.write(orjson.dumps(line) + b"\n")


def test_the_first_report_reads_every_agent_without_an_ingest(home):
    assert not (home / ".sessionlake").exists()
    result = _sessionlake(home, "usage", "daily", "--json")
    assert result.returncode == 0, result.stderr
    assert "reading sessions" not in result.stderr  # not a terminal: no progress line
    totals = json.loads(result.stdout)["totals"]
    assert totals["inputTokens"] == SAMPLE_TOTALS["inputTokens"] + OTHER_AGENTS_INPUT
    assert totals["outputTokens"] == SAMPLE_TOTALS["outputTokens"] + OTHER_AGENTS_OUTPUT
    assert (home / ".sessionlake" / "state.duckdb").exists()
    assert _totals(home) == _rounded(totals)  # nothing new: the same report


def test_a_report_after_an_append_counts_the_new_response_once(home):
    before = _totals(home)
    _append_response(_claude_session(home), "msg_appended", 100)
    _append_response(_claude_session(home), "msg_appended", 900)  # the same response, final output count
    after = _totals(home)
    assert after["inputTokens"] == before["inputTokens"] + 7
    assert after["outputTokens"] == before["outputTokens"] + 900
    assert _totals(home) == after


def test_no_refresh_reports_only_what_is_stored(home):
    stored = _totals(home)
    _append_response(_claude_session(home), "msg_later", 50)
    assert _totals(home, "--no-refresh") == stored
    assert _totals(home)["outputTokens"] == stored["outputTokens"] + 50


def test_a_report_while_another_process_holds_the_warehouse_shows_what_is_stored(home):
    stored = _totals(home)
    _append_response(_claude_session(home), "msg_while_held", 50)
    with held_by_another_process(home / ".sessionlake" / "state.duckdb"):
        started = time.monotonic()
        report = _sessionlake(home, "usage", "daily", "--json")
        waited = time.monotonic() - started
        line = _sessionlake(home, "statusline", "--no-cache", stdin=json.dumps(
            {"session_id": "fed8ce56", "transcript_path": str(_claude_session(home)), "model": {"id": "x"}}))
    assert report.returncode == 0, report.stderr
    assert _rounded(json.loads(report.stdout)["totals"]) == stored  # the stored usage, without the append
    assert "held by another process" in report.stderr and " ago (" in report.stderr
    assert waited < 60  # a bounded wait (5 s), not the 120 s an ingest waits
    assert line.returncode == 0 and "💰 $" in line.stdout and "held by another process" in line.stderr
    assert _totals(home)["outputTokens"] == stored["outputTokens"] + 50  # released: read at the next report


SLOW_DISK = """
import sys, time
import resources.ingest.parallel_reads as reads
read_files = reads.read_files
def slow_read_files(processor_type, files):  # a slow disk: 5 ms a file, so the read outlasts the line's delay
    time.sleep(0.005 * len(files))
    return read_files(processor_type, files)
reads.read_files = slow_read_files
from pipelines.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_long_first_read_shows_progress_on_a_terminal_only(tmp_path):
    home = tmp_path / "user"
    generate_corpus(home / ".claude" / "projects", sessions=400)  # ~23 MB: read in worker processes
    ours, theirs = pty.openpty()
    try:  # however fast the machine, the read takes over a second (see SLOW_DISK)
        proc = subprocess.Popen([sys.executable, "-c", SLOW_DISK, "usage", "monthly", "--json"],
                                env=_env(home), stdout=subprocess.PIPE, stderr=theirs, cwd=REPO)
        os.close(theirs)
        out, _ = proc.communicate(timeout=300)
        shown = b""
        while True:
            try:
                chunk = os.read(ours, 65536)
            except OSError:  # the other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(ours)
    assert proc.returncode == 0
    assert json.loads(out)["totals"]["totalTokens"] > 0
    assert b"reading sessions: " in shown and b"/400 files" in shown and b"MB/s" in shown


def _exit_and_imports(home: Path, argv: list[str], stdin: str | None, packages: tuple[str, ...]) -> str:
    """``repr((exit status, [loaded modules of packages]))`` of the CLI run with ``argv`` in a fresh process."""
    code = (f"import sys\nfrom pipelines.cli.main import main\nstatus = main({argv!r})\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})\n"
            "print(repr((status, heavy)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], env=_env(home), input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, stdin", [
    (["usage", "daily", "--json"], None),
    (["usage", "blocks", "--no-refresh"], None),
    (["statusline"], "{}"),
    (["capture", "--text", "a note"], None),
])
def test_reports_statusline_and_capture_import_neither_dagster_nor_lancedb(home, argv, stdin):
    assert _exit_and_imports(home, argv, stdin, ("dagster", "lancedb", "lance")) == "(0, [])"
    if argv[0] == "usage" and "--no-refresh" not in argv:
        with duckdb.connect(str(home / ".sessionlake" / "state.duckdb"), read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM usage_messages").fetchall()[0][0] > 0  # it did read


@pytest.mark.parametrize("argv, stdin", [(["statusline"], "{}"), (["usage", "daily", "--json"], None)])
def test_a_small_write_loads_neither_pyarrow_nor_numpy(home, argv, stdin):
    """A new response is written as one JSON text (resources/state/store.py `staged_rows`): registering an Arrow
    batch would make DuckDB import pyarrow's dataset module and numpy, about 0.3 s of CPU per call."""
    first = _totals(home)
    _append_response(_claude_session(home), "msg_small_write", 11)
    assert _exit_and_imports(home, argv, stdin, ("pyarrow", "numpy")) == "(0, [])"
    after = _totals(home, "--no-refresh")  # what the call above wrote
    assert after["inputTokens"] == first["inputTokens"] + 7
    assert after["outputTokens"] == first["outputTokens"] + 11


def test_a_first_read_in_worker_processes_loads_neither_pyarrow_nor_numpy_nor_the_price_database(tmp_path):
    """The rows the workers read reach DuckDB as JSON lines (resources/state/store.py `staged_rows`), the files
    seen and the marks too: importing pyarrow (DuckDB's Arrow scan loads its dataset module and numpy) cost a
    first report 0.2 s of CPU beside the workers. The price database is loaded in a process forked at the start
    (resources/usage/prices_ahead.py): loaded in the report's own process, it took 0.17 s of CPU beside them."""
    home = tmp_path / "user"
    corpus = generate_corpus(home / ".claude" / "projects", sessions=320, projects=8)  # ~19 MB: read by workers
    assert _exit_and_imports(home, ["usage", "daily", "--json"], None,
                             ("pyarrow", "numpy", "genai_prices", "pydantic", "httpx2")) == "(0, [])"
    totals = _totals(home, "--no-refresh")  # what the call above wrote
    assert [totals[k] for k in ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")] == \
        [corpus["input"], corpus["output"], corpus["cache_creation"], corpus["cache_read"]]
    with duckdb.connect(str(home / ".sessionlake" / "state.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM session_processor_state WHERE processor_name = 'usage'"
                            ).fetchall() == [(320,)]


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`sessionlake usage session --json | head -c 100`: the closed pipe ends the command quietly, exit 0."""
    home = tmp_path / "user"
    generate_corpus(home / ".claude" / "projects", sessions=300, projects=3, turns=1)
    reader = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "usage", "session", "--json"],
                              env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert len(reader.stdout.read(100)) == 100
    reader.stdout.close()  # the output is larger than a pipe holds: the command's next write finds it closed
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
