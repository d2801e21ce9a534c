"""``python -m bench dropin``: ``sessionlake usage`` as a drop-in for ``ccusage``, side by side in one run.

Every call is a fresh process, as a user types it, on a generated Claude Code home (bench/corpus.py:
2,000 sessions, about 117 MB; 200 with --quick) with ``HOME`` pointing at it; each figure is the
median of 5 calls (ours and ccusage's in turns), and the ratio is ours over ccusage's for the same state
of the tree:

- the parse a first report runs, in one process, against a plain orjson pass over every line (CPU seconds;
  the one figure not against ccusage);
- first report on a new home: ``sessionlake usage daily --json`` with no data home yet (it reads every
  session), against ``ccusage daily --json --offline`` (which reads every session on every call);
- after 10 new sessions in 10 projects: the next report, which reads only those;
- nothing new: the next report again, which prints the stored report (a walk of the session folders,
  no DuckDB), and beside it the same report computed (``SESSIONLAKE_REPORT_CACHE=off``: a walk, one
  query, the report), what a report that asks another question costs;
- statusline after a new response: one response appended to a live session, then
  ``sessionlake statusline`` against ``ccusage statusline``, Claude Code's hook JSON on stdin;
- at 20,000 sessions (not with --quick; once, as it takes minutes): the first report's peak memory
  (the process tree's) and the nothing-new report (stored and computed), against ccusage's.

The peer is ccusage 20.0.24 from npm, taken from ``CCUSAGE_BIN`` or from the npm prefix
``CCUSAGE_NPM_PREFIX`` (default /work/tools/node, where
``npm install --prefix /work/tools/node ccusage@20.0.24`` puts it); when it is not there, only our
figures are printed, with a message saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.corpus import generate_corpus
from bench.proc import Measured, run_measured
from bench.statusline import LIVE_PROJECT, LIVE_SESSION, MODEL, _response

REPS = 5
CCUSAGE_VERSION = "20.0.24"
DEFAULT_NPM_PREFIX = "/work/tools/node"
TARGETS = {"first": 2.0, "new10": 0.5, "nothing": 0.3, "statusline": 0.2, "nothing20k": 0.05, "memory20k": 1.5}
PARSE_TARGET = 2.0
"""The first report's parse against a plain orjson pass over every line (the issue's floor), in CPU seconds."""


def ccusage_bin() -> tuple[str | None, str]:
    """The ccusage launcher from ``CCUSAGE_BIN`` or the npm prefix, or None and what to do about it."""
    explicit = os.environ.get("CCUSAGE_BIN")
    prefix = Path(os.environ.get("CCUSAGE_NPM_PREFIX", DEFAULT_NPM_PREFIX))
    path = Path(explicit) if explicit else prefix / "node_modules" / ".bin" / "ccusage"
    if not path.exists():
        return None, (f"ccusage not found at {path}: set CCUSAGE_BIN, or run "
                      f"npm install --prefix {prefix} ccusage@{CCUSAGE_VERSION}")
    if shutil.which("node") is None:
        return None, "node is not installed"
    return str(path), ""


def _env(home: Path, data: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("SESSIONLAKE_", "CLAUDE_", "CODEX_", "GEMINI_", "OPENCODE_", "QWEN_", "XDG_"))}
    return {**keep, "HOME": str(home), "SESSIONLAKE_HOME": str(data), "TZ": "UTC",
            "CLAUDE_CONFIG_DIR": str(home / ".claude")}


class _Tools:
    def __init__(self, home: Path, data: Path, peer: str | None):
        self.home, self.data, self.peer = home, data, peer
        self.env = _env(home, data)
        self.ours = [sys.executable, "-m", "pipelines.cli.main"]

    def report(self) -> Measured:
        return self._run(self.ours + ["usage", "daily", "--json"])

    def computed(self) -> Measured:
        """The report computed from the warehouse, the stored one bypassed (a report that asks another question)."""
        return self._run(self.ours + ["usage", "daily", "--json"], {"SESSIONLAKE_REPORT_CACHE": "off"})

    def ccusage(self) -> Measured:
        return self._run([self.peer, "daily", "--json", "--offline"])

    def statusline(self, argv: list[str], payload: bytes) -> float:
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, input=payload, capture_output=True, timeout=300)
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"{argv[0]} statusline failed: {done.stderr.decode()[-500:]}")
        return elapsed

    def _run(self, argv: list[str], env: dict | None = None) -> Measured:
        done = run_measured(argv, {**self.env, **(env or {})})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[-3:])} exited {done.returncode}: {done.stderr[-500:]}")
        return done


def _medians(calls: Callable[[], Measured], reps: int = REPS) -> tuple[float, float]:
    """Median wall and median CPU seconds (the process tree's user + system) of ``reps`` calls."""
    return _median_of([calls() for _ in range(reps)])


def _in_turns(ours: Callable[[], Measured], theirs: Callable[[], Measured] | None,
              reps: int = REPS) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """`_medians` of ``ours`` and of ``theirs`` (None: ours only), called in turns, so that a change of the
    machine's speed during the run (it moves ccusage's own time by a third here) moves both alike."""
    mine, peer = [], []
    for _ in range(reps):
        if theirs is not None:
            peer.append(theirs())
        mine.append(ours())
    return _median_of(mine), _median_of(peer) if peer else None


def _median_of(done: list[Measured]) -> tuple[float, float]:
    return statistics.median(d.elapsed_sec for d in done), statistics.median(d.cpu_sec for d in done)


def _rows(metric: str, ours: tuple[float, float], peer: tuple[float, float] | None, key: str) -> list[dict]:
    """A wall-time row with the target, and a CPU-time row beside it: on a machine shared with other work,
    CPU seconds move far less with the load than wall seconds."""
    return [_row(metric, ours[0], peer and peer[0], key),
            _row("  same, CPU s (user+sys)", ours[1], peer and peer[1], key)]


def _row(metric: str, ours: float, peer: float | None, key: str, unit: str = "s") -> dict:
    row = {"metric": metric, "value": round(ours, 3), "unit": unit, "target": f"<= {TARGETS[key]}x ccusage"}
    if peer:
        ratio = ours / peer
        row.update(baseline=round(peer, 3), ratio=round(ratio, 3), ok=ratio <= TARGETS[key])
    return row


def _totals(measured: Measured) -> tuple:
    t = json.loads(measured.stdout)["totals"]
    return t["inputTokens"], t["outputTokens"], t["cacheCreationTokens"], t["cacheReadTokens"]


def run(quick: bool) -> list[dict]:
    peer, why = ccusage_bin()
    if peer is None:
        print(f"bench dropin: ccusage skipped: {why}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="sessionlake-bench-dropin-"))
    try:
        rows = _at_2000(work, 200 if quick else 2000, peer)
        if not quick:
            rows += _at_20000(work / "20k", peer)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _at_2000(work: Path, sessions: int, ccusage: str | None) -> list[dict]:
    home, data = work / "home", work / "data"
    corpus = generate_corpus(home / ".claude" / "projects", sessions=sessions)
    tools = _Tools(home, data, ccusage)
    rows = [{"metric": "corpus", "value": corpus["files"], "unit": "sessions",
             "baseline": round(corpus["bytes"] / 1e6, 1), "target": "MB (baseline column)"}]
    cc = tools.ccusage() if ccusage else None  # warms the page cache for both
    tools.report()
    rows += _parse_rows(home / ".claude" / "projects")
    if cc is not None:
        assert _totals(cc) == (corpus["input"], corpus["output"], corpus["cache_creation"], corpus["cache_read"]), \
            "ccusage counts another total than the corpus holds"

    def first() -> Measured:
        shutil.rmtree(data, ignore_errors=True)
        done = tools.report()
        want = (corpus["input"], corpus["output"], corpus["cache_creation"], corpus["cache_read"])
        if _totals(done) != want:
            raise AssertionError(f"first report counted {_totals(done)}, the corpus holds {want}")
        return done

    peer_call = tools.ccusage if ccusage else None
    ours, theirs = _in_turns(first, peer_call)
    rows += _rows(f"first report, new home, {sessions:,} sessions", ours, theirs, "first")
    rows += _before(tools, data, theirs)

    added = [0]

    def ten_new() -> Measured:
        added[0] += 1
        generate_corpus(home / ".claude" / "projects", sessions=10, projects=10, seed=100 + added[0])
        return tools.report()

    rows += _rows("report after 10 new sessions in 10 projects", *_in_turns(ten_new, peer_call), "new10")
    ours, theirs = _in_turns(tools.report, peer_call)
    rows += _rows(f"report, nothing new, {sessions:,} sessions (the stored report)", ours, theirs, "nothing")
    rows += _rows(f"  report, nothing new, {sessions:,} sessions, computed (SESSIONLAKE_REPORT_CACHE=off)",
                  _medians(tools.computed), theirs, "nothing")
    rows.append(_statusline(tools, home, ccusage))
    return rows


def _parse_rows(root: Path, reps: int = REPS) -> list[dict]:
    """The parse a first report's workers run (`UsageProcessor.read_session`: each file's lines decoded and its
    responses' rows built, no hashing) over every session in this process, against a plain ``orjson.loads`` of
    every line, in turns: median CPU seconds of each."""
    import orjson

    from resources.ingest.processors.usage import UsageProcessor

    files = sorted(root.rglob("*.jsonl"))

    def plain() -> None:
        for path in files:
            with open(path, "rb") as f:
                for line in f:
                    orjson.loads(line)

    def parse() -> None:
        for path in files:
            UsageProcessor.read_session(path, path.parent.name, path.stem, 0)

    cpu: dict = {plain: [], parse: []}
    for _ in range(reps):
        for step in cpu:
            started = time.process_time()
            step()
            cpu[step].append(time.process_time() - started)
    floor, ours = statistics.median(cpu[plain]), statistics.median(cpu[parse])
    return [{"metric": "floor: orjson.loads of every line, one process, CPU s", "value": round(floor, 3), "unit": "s"},
            {"metric": "parse of every session (read_session, no hashing), one process, CPU s", "value": round(ours, 3),
             "unit": "s", "baseline": round(floor, 3), "ratio": round(ours / floor, 3),
             "target": f"<= {PARSE_TARGET}x floor", "ok": ours / floor <= PARSE_TARGET}]


def _before(tools: _Tools, data: Path, peer: tuple[float, float] | None) -> list[dict]:
    """Once: what a first report cost before reports read their own writes, ``sessionlake ingest --only usage``
    (a Dagster run) then the report (``--no-refresh``), on a new home."""
    shutil.rmtree(data, ignore_errors=True)
    env = {**tools.env, "DAGSTER_HOME": str(data / "dagster")}
    ingest = run_measured(tools.ours + ["ingest", "--only", "usage"], env)
    report = run_measured(tools.ours + ["usage", "daily", "--json", "--no-refresh"], env)
    if ingest.returncode or report.returncode:
        raise RuntimeError(f"ingest --only usage + report failed: {ingest.stderr[-500:]} {report.stderr[-500:]}")
    return [{**row, "target": "before (once)", "ok": None} for row in _rows(
        "before: ingest --only usage, then the report", (ingest.elapsed_sec + report.elapsed_sec,
                                                          ingest.cpu_sec + report.cpu_sec), peer, "first")]


def _statusline(tools: _Tools, home: Path, peer: str | None) -> dict:
    live = home / ".claude" / "projects" / LIVE_PROJECT / f"{LIVE_SESSION}.jsonl"
    live.parent.mkdir(parents=True, exist_ok=True)
    live.write_bytes(b"".join(_response(n, datetime.now(UTC)) for n in range(5)))
    payload = json.dumps({"session_id": LIVE_SESSION, "transcript_path": str(live), "cwd": "/home/dev/live",
                          "model": {"id": MODEL, "display_name": "Sonnet 4"},
                          "workspace": {"current_dir": "/home/dev/live"}}).encode()
    count = [5]

    def after_response(argv: list[str]) -> float:
        with open(live, "ab") as f:
            f.write(_response(count[0], datetime.now(UTC)))
        count[0] += 1
        return tools.statusline(argv, payload)

    ours_argv = tools.ours + ["statusline"]
    after_response(ours_argv)  # the live session's first read is not what a prompt pays
    ours = statistics.median(after_response(ours_argv) for _ in range(REPS))
    theirs = None
    if peer:
        after_response([peer, "statusline"])
        theirs = statistics.median(after_response([peer, "statusline"]) for _ in range(REPS))
    return _row("statusline after a new response", ours, theirs, "statusline")


def _at_20000(work: Path, peer: str | None) -> list[dict]:
    """Once each (minutes per call at this size): the first report's peak memory, and nothing new."""
    home, data = work / "home", work / "data"
    corpus = generate_corpus(home / ".claude" / "projects", sessions=20000, projects=400)
    tools = _Tools(home, data, peer)
    cc = tools.ccusage() if peer else None
    first = tools.report()
    rows = [{"metric": "corpus", "value": corpus["files"], "unit": "sessions",
             "baseline": round(corpus["bytes"] / 1e6, 1), "target": "MB (baseline column)"},
            _row("first report, 20,000 sessions, wall (once)", first.elapsed_sec, cc and cc.elapsed_sec, "first"),
            _row("first report, 20,000 sessions, peak tree RSS (once)", first.peak_tree_rss / 1e6,
                 cc and cc.peak_tree_rss / 1e6, "memory20k", unit="MB")]
    nothing = _medians(tools.report, 3)
    computed = _medians(tools.computed, 3)
    cc_again = _medians(tools.ccusage, 3) if peer else None
    rows += _rows("report, nothing new, 20,000 sessions, the stored report (median of 3)", nothing, cc_again,
                  "nothing20k")
    rows += _rows("  report, nothing new, 20,000 sessions, computed (SESSIONLAKE_REPORT_CACHE=off)", computed,
                  cc_again, "nothing20k")
    rows.append(_row("  first report, 20,000 sessions, CPU s (once)", first.cpu_sec, cc and cc.cpu_sec, "first"))
    return rows
