"""Start-up benchmark (issue 19): what each command costs in a fresh process, beside the floors.

Every command runs as a user runs it, a new process each time (median of ``REPEAT``), next to the
floors of any Python command (``python -c pass``) and of any report (``python -c "import duckdb"``),
with the import time of its modules (``-X importtime``, top-level modules summed). Side by side in
the same run, on one generated tree of 2,000 sessions (``--quick``: 200) under a throwaway $HOME:
- ``sessionlake recall`` (fresh process) against ``grep -r`` of the same word over the raw files, and
  against ``python -c "import lance"``, the floor of any process that reads a Lance table (and
  ``python -c "import pyarrow"``, which that import begins with), each floor also beside ``grep -r``;
- ``sessionlake ingest`` with nothing to do;
- the first full ingest (usage, memory, archive; the median of `FIRST_INGEST_REPEAT` new homes) against
  ccusage's ``daily`` over the same tree and against the same processors called directly in a subprocess
  (`bench.direct`), as many times each, in turns, and what it adds to them in seconds, wall and CPU;
- ``sessionlake usage daily`` on 50 sessions, warm, against the duckdb floor: the stored report (no
  DuckDB), and the same report computed (``SESSIONLAKE_REPORT_CACHE=off``);
- ``sessionlake capture`` (the hot path of hooks).
Recall's time is also split into its phases (`bench.recall_phases`), the lost-table check's among them.
sessionlake's own modules are byte-compiled first, as an installed package's are (with
``PYTHONDONTWRITEBYTECODE`` set, every process would compile them from source again).

Run: ``python -m bench startup``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ccusage import ccusage_launcher
from bench.corpus import generate_corpus
from bench.proc import Measured, run_measured

REPEAT = 5
RECALL_TARGET_SEC = 0.3
RECALL_GREP_RATIO = 3.0
REPORT_FLOOR_RATIO = 1.3
NOTHING_TO_DO_SEC = 0.5
FIRST_INGEST_CCUSAGE_RATIO = 6.0
FIRST_INGEST_DIRECT_RATIO = 1.25
FIRST_INGEST_REPEAT = 3
"""First ingests (and direct calls) per run: one swung from 1.11x to 1.63x the direct call between runs."""
CUE = "parser"
_TOP_LEVEL = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


def _env(user: Path, **extra: str) -> dict[str, str]:
    """A sessionlake (and ccusage) process over ``user/.claude/projects``, its data home under ``user``."""
    return {**os.environ, "HOME": str(user), "TZ": "UTC", "SESSIONLAKE_AGENTS": "claude",
            "SESSIONLAKE_HOME": str(user / "sessionlake"), "SESSIONLAKE_SESSIONS_DIR": str(user / ".claude/projects"),
            "DAGSTER_HOME": str(user / "sessionlake" / "dagster"), **extra}


def _checked(args: list[str], env: dict[str, str], ok=(0,)) -> Measured:
    m = run_measured(args, env)
    if m.returncode not in ok:
        raise AssertionError(f"{' '.join(args[:6])} exited {m.returncode}: {m.stderr[-2000:]}")
    return m


def _median(args: list[str], env: dict[str, str], repeat: int, ok=(0,)) -> float:
    return _medians(args, env, repeat, ok)[0]


def _medians(args: list[str], env: dict[str, str], repeat: int, ok=(0,)) -> tuple[float, float]:
    """Median wall and CPU seconds (CPU time barely moves with other load on the machine)."""
    runs = [_checked(args, env, ok) for _ in range(repeat)]
    return statistics.median(m.elapsed_sec for m in runs), statistics.median(m.cpu_sec for m in runs)


def _import_sec(args: list[str], env: dict[str, str], ok=(0,)) -> float:
    """Seconds the process spent importing (the top-level modules of ``-X importtime``, summed)."""
    m = _checked([args[0], "-X", "importtime", *args[1:]], env, ok)
    return sum(int(hit.group(1)) for line in m.stderr.splitlines() if (hit := _TOP_LEVEL.match(line))) / 1e6


def _row(metric: str, value: float, baseline: float | None = None, target: str | None = None,
         ok: bool | None = None, unit: str = "s", **extra) -> dict:
    row = {"metric": metric, "value": value, "unit": unit, **extra}
    if baseline:
        row.update(baseline=baseline, ratio=value / baseline)
    if target is not None:
        row.update(target=target, ok=ok)
    return row


def _command_rows(name: str, args: list[str], env: dict, repeat: int, floors: dict, ok=(0,)) -> tuple[float, list]:
    wall, cpu = _medians(args, env, repeat, ok)
    imports = _import_sec(args, env, ok)
    return wall, [_row(f"{name}: wall, fresh process (median of {repeat})", wall, floors["pass"], cpu_sec=cpu),
                  _row(f"{name}: of which imports", imports, floors["duckdb_imports"], unit="s import")]


def _first_ingests(cli: list[str], env: dict[str, str], tmp: Path, repeat: int,
                   peer: list[str] | None) -> tuple[float | None, Measured, Measured]:
    """The median wall time of ``peer`` (ccusage's command; None: not measured) and the median (by wall time)
    of ``repeat`` first ingests on new homes and of as many direct calls of the processors (`bench.direct`),
    all taken in turns so a change of the machine's speed meets each alike. The last ingest is into the
    home of ``env``, which the commands after it use."""
    peers, directs, firsts = [], [], []
    for i in range(repeat):
        if peer:
            peers.append(_checked(peer, env).elapsed_sec)
        directs.append(_checked([cli[0], "-m", "bench.direct"], {**env, "SESSIONLAKE_HOME": str(tmp / f"direct-{i}")}))
        home = Path(env["SESSIONLAKE_HOME"]) if i == repeat - 1 else tmp / f"first-{i}"
        firsts.append(_checked([*cli, "ingest", "--json"],
                               {**env, "SESSIONLAKE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}))
    direct, first = (sorted(runs, key=lambda m: m.elapsed_sec)[len(runs) // 2] for runs in (directs, firsts))
    return (statistics.median(peers) if peers else None), direct, first


def _phase_rows(env: dict[str, str], repeat: int) -> list[dict]:
    """Recall's phases in fresh processes (`bench.recall_phases`): median wall and CPU milliseconds of each."""
    runs = [json.loads(_checked([sys.executable, "-m", "bench.recall_phases", CUE], env).stdout) for _ in range(repeat)]
    return [_row(f"recall {CUE!r} phase: {phase} (median of {repeat})",
                 statistics.median(run[phase][0] for run in runs), unit="ms",
                 cpu_ms=statistics.median(run[phase][1] for run in runs)) for phase in runs[0]]


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run(quick: bool = False) -> list[dict]:
    sessions, repeat = (200, 3) if quick else (2000, REPEAT)
    py = sys.executable
    cli = [py, "-m", "pipelines.cli.main"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    rows = [_row("machine load at start (1/5/15 min), 2 shared cores", _load(), unit="", commit=commit)]
    root = Path(__file__).parent.parent
    subprocess.run([py, "-m", "compileall", "-q", *(str(root / pkg) for pkg in ("pipelines", "resources", "bench"))],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-startup-") as tmp:
        tmp = Path(tmp)
        big, small = tmp / "big", tmp / "small"
        corpus = generate_corpus(big / ".claude/projects", sessions=sessions, projects=100)
        generate_corpus(small / ".claude/projects", sessions=50, projects=10)
        for path in (big / ".claude/projects").rglob("*.jsonl"):  # the page cache, for every contender
            path.read_bytes()
        env, small_env = _env(big), _env(small)

        (bare, bare_cpu), (duck, duck_cpu) = (_medians([py, "-c", code], env, repeat) for code in ("pass",
                                                                                                  "import duckdb"))
        floors = {"pass": bare, "duckdb": duck, "duckdb_imports": _import_sec([py, "-c", "import duckdb"], env)}
        rows += [_row(f"floor: python -c pass (median of {repeat})", bare, cpu_sec=bare_cpu),
                 _row(f"floor: python -c 'import duckdb' (median of {repeat})", duck, bare, cpu_sec=duck_cpu),
                 _row("floor: of which importing duckdb", floors["duckdb_imports"], unit="s import")]

        n = f"{corpus['files']:,} sessions ({corpus['bytes'] / 1e6:.0f} MB, 100 projects)"
        launcher, why = ccusage_launcher()
        peer, direct, first = _first_ingests(cli, env, tmp, FIRST_INGEST_REPEAT,
                                             [launcher, "daily", "--json", "--offline"] if launcher else None)
        rows += [
            _row(f"{n}: ccusage {'daily --json' if peer else 'skipped: ' + why} (median of {FIRST_INGEST_REPEAT}, "
                 "in turns with the ingests)", peer or 0.0),
            _row(f"{n}: first full ingest (usage, memory, archive), median of {FIRST_INGEST_REPEAT} new homes, "
                 "vs ccusage daily", first.elapsed_sec, peer,
                 f"<= {FIRST_INGEST_CCUSAGE_RATIO}x",
                 bool(peer) and first.elapsed_sec / peer <= FIRST_INGEST_CCUSAGE_RATIO,
                 cpu_sec=first.cpu_sec, direct_cpu_sec=direct.cpu_sec),
            _row(f"{n}: first full ingest vs the processors called directly (subprocess)", first.elapsed_sec,
                 direct.elapsed_sec, f"<= {FIRST_INGEST_DIRECT_RATIO}x",
                 first.elapsed_sec / direct.elapsed_sec <= FIRST_INGEST_DIRECT_RATIO),
            _row(f"{n}: first full ingest minus the processors called directly (what Dagster adds)",
                 first.elapsed_sec - direct.elapsed_sec, cpu_sec=first.cpu_sec - direct.cpu_sec),
            _row(f"{n}: first full ingest, peak RSS of the process tree", first.peak_tree_rss / (1 << 20),
                 direct.peak_tree_rss / (1 << 20), unit="MB"),
        ]

        idle, idle_rows = _command_rows("ingest, nothing to do", [*cli, "ingest"], env, repeat, floors)
        rows += [*idle_rows, _row("ingest, nothing to do: target", idle, target=f"<= {NOTHING_TO_DO_SEC} s",
                                  ok=idle <= NOTHING_TO_DO_SEC)]

        grep = _median(["grep", "-r", "-c", CUE, str(big / ".claude/projects")], env, repeat)
        lance_floor, lance_floor_cpu = _medians([py, "-c", "import lance"], env, repeat)
        arrow_floor, arrow_floor_cpu = _medians([py, "-c", "import pyarrow"], env, repeat)
        recall, recall_rows = _command_rows(f"recall {CUE!r}", [*cli, "recall", CUE], env, repeat, floors)
        rows += [*recall_rows,
                 _row(f"floor: grep -r -c {CUE!r} over the raw files (median of {repeat})", grep),
                 _row(f"floor: python -c 'import lance', what any Lance read imports (median of {repeat})",
                      lance_floor, bare, cpu_sec=lance_floor_cpu),
                 _row(f"floor: python -c 'import pyarrow', what pylance imports first (median of {repeat})",
                      arrow_floor, bare, cpu_sec=arrow_floor_cpu),
                 _row("floor: python -c 'import lance' vs grep -r", lance_floor, grep),
                 _row("floor: python -c 'import pyarrow' vs grep -r", arrow_floor, grep),
                 _row(f"recall {CUE!r}: vs python -c 'import lance'", recall, lance_floor),
                 _row(f"recall {CUE!r}: vs grep -r", recall, grep, f"<= {RECALL_GREP_RATIO}x",
                      recall / grep <= RECALL_GREP_RATIO),
                 _row(f"recall {CUE!r}: target", recall, target=f"<= {RECALL_TARGET_SEC} s",
                      ok=recall <= RECALL_TARGET_SEC),
                 *_phase_rows(env, repeat)]

        _checked([*cli, "ingest", "--only", "usage"], small_env)
        report, report_rows = _command_rows("usage daily, 50 sessions, warm", [*cli, "usage", "daily"], small_env,
                                            repeat, floors)
        computed_env = {**small_env, "SESSIONLAKE_REPORT_CACHE": "off"}
        computed, computed_rows = _command_rows(
            "usage daily, 50 sessions, warm, computed (SESSIONLAKE_REPORT_CACHE=off)", [*cli, "usage", "daily"],
            computed_env, repeat, floors)
        rows += [*report_rows, _row("usage daily, 50 sessions, warm: vs python -c 'import duckdb'", report,
                                    floors["duckdb"], f"<= {REPORT_FLOOR_RATIO}x",
                                    report / floors["duckdb"] <= REPORT_FLOOR_RATIO),
                 *computed_rows, _row("usage daily, 50 sessions, warm, computed: vs python -c 'import duckdb'",
                                      computed, floors["duckdb"], f"<= {REPORT_FLOOR_RATIO}x",
                                      computed / floors["duckdb"] <= REPORT_FLOOR_RATIO)]
        _, capture_rows = _command_rows("capture --text", [*cli, "capture", "--text", "a note"], small_env, repeat,
                                        floors)
        rows += capture_rows
    rows.append(_row("machine load at end (1/5/15 min)", _load(), unit=""))
    return rows
