"""Orchestration benchmark (issue 9 item 3): what Dagster adds on top of the processors.

Side by side in one run, each on a fresh data home and Dagster home:
- ``sessionlake ingest`` (a subprocess: one in-process Dagster run) against the same three
  processors called directly (`bench.direct`), both in this process and in a subprocess, so one
  ratio compares like with like (Python start-up and imports paid by both);
- the run's Dagster events (from the instance's event log) and the overhead per event, on a small
  and a 10x larger tree with the same projects: the event count must not grow with the files;
- the peak RSS of the process tree on the large tree, CLI and direct;
- 10 new sessions in 10 projects on top of the ingested tree, end to end, beside the floor of any
  command built on one Dagster run (`bench.dagster_floor`: import, instance, a no-op run);
- the daemon (`bench.orchestration_daemon`): a single-project change until its rows are in DuckDB,
  and the first start on 101 projects.

Run: ``python -m bench orchestration`` (``--quick``: 200 and 2,000 sessions, 12 daemon projects).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.corpus import generate_corpus
from bench.proc import Measured, python_env, run_measured

CLI_TARGET_RATIO = 1.3
PEAK_RSS_TARGET = 1 << 30
INCREMENT_TARGET_SEC = 2.0
INCREMENT_SESSIONS = 10
PROJECTS = 40
FULL = {"small": 2000, "large": 20_000}
QUICK = {"small": 200, "large": 2000}
MB = 1 << 20


def _warm(root: Path) -> None:
    """Read every file once, so every contender sees the tree in the page cache."""
    for path in root.rglob("*.jsonl"):
        path.read_bytes()


def _cli(home: Path, root: Path) -> tuple[Measured, dict]:
    m = run_measured([sys.executable, "-m", "pipelines.cli.main", "ingest", "--json"], python_env(home, root))
    if m.returncode != 0:
        raise AssertionError(f"sessionlake ingest exited {m.returncode}: {m.stderr[-2000:]}")
    return m, json.loads(m.stdout)


def _direct_subprocess(home: Path, root: Path) -> tuple[Measured, dict]:
    m = run_measured([sys.executable, "-m", "bench.direct"], python_env(home, root))
    if m.returncode != 0:
        raise AssertionError(f"python -m bench.direct exited {m.returncode}: {m.stderr[-2000:]}")
    return m, json.loads(m.stdout)


def _direct_in_process(home: Path, root: Path) -> tuple[float, dict]:
    from bench.direct import ingest_direct
    from resources.config.settings import Settings

    settings = Settings.from_env()._replace(home=home, sessions_dir=root)
    started = time.perf_counter()
    totals = ingest_direct(settings)
    return time.perf_counter() - started, totals


def _same_work(cli: dict, direct: dict) -> None:
    """The CLI run and the direct call extracted the same items from the same files."""
    pairs = {"usage_messages": ("usage", "responses_extracted"), "memory_records": ("memory", "records_extracted"),
             "session_archive": ("archive", "versions_extracted")}
    for asset, (name, label) in pairs.items():
        got, want = cli["assets"][asset][label], direct[name]["items_extracted"]
        if got != want or cli["assets"][asset]["files_processed"] != direct[name]["processed"]:
            raise AssertionError(f"{asset}: the CLI run extracted {got}, the direct call {want}")


def run_events(dagster_home: Path, run_id: str) -> Counter:
    """The run's events in the instance's event log, by type."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        return Counter(e.dagster_event.event_type_value if e.dagster_event else "LOG"
                       for e in instance.all_logs(run_id))


def _cold(root: Path, tmp: Path) -> dict:
    """Fresh-home ingests of ``root``: the direct call in process, in a subprocess, and the CLI."""
    homes = {kind: tmp / f"{root.name}-{kind}" for kind in ("direct", "direct_sub", "cli")}
    cpu = time.process_time()
    elapsed, direct = _direct_in_process(homes["direct"], root)
    cpu = time.process_time() - cpu
    sub, sub_totals = _direct_subprocess(homes["direct_sub"], root)
    cli, result = _cli(homes["cli"], root)
    _same_work(result, direct)
    _same_work(result, sub_totals)
    return {"homes": homes, "direct": elapsed, "direct_cpu": cpu, "direct_sub": sub, "cli": cli, "cli_run": result}


def _add_sessions(root: Path, tmp: Path) -> None:
    """``INCREMENT_SESSIONS`` new sessions, one in each of as many existing projects."""
    new = tmp / "increment"
    generate_corpus(new, sessions=INCREMENT_SESSIONS, projects=INCREMENT_SESSIONS, seed=99)
    for path in new.glob("*/*.jsonl"):
        shutil.move(path, root / path.parent.name / path.name)


def _dagster_floor(home: Path, root: Path) -> tuple[Measured, dict]:
    m = run_measured([sys.executable, "-m", "bench.dagster_floor"], python_env(home, root))
    if m.returncode != 0:
        raise AssertionError(f"python -m bench.dagster_floor exited {m.returncode}: {m.stderr[-2000:]}")
    return m, json.loads(m.stdout)


def _increment(root: Path, tmp: Path, homes: dict) -> dict:
    _add_sessions(root, tmp)
    elapsed, direct = _direct_in_process(homes["direct"], root)
    sub, _ = _direct_subprocess(homes["direct_sub"], root)
    cli, result = _cli(homes["cli"], root)
    _same_work(result, direct)
    floor, phases = _dagster_floor(homes["cli"], root)
    return {"direct": elapsed, "direct_sub": sub.elapsed_sec, "cli": cli.elapsed_sec, "cli_run": result,
            "projects": len(result["projects"]), "floor": floor.elapsed_sec, "floor_phases": phases}


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _ratio_row(metric: str, value: float, baseline: float, target: float | None = CLI_TARGET_RATIO) -> dict:
    row = {"metric": metric, "value": value, "unit": "s", "baseline": baseline, "ratio": value / baseline}
    if target is not None:
        row.update(target=f"<= {target}x", ok=value / baseline <= target)
    return row


def _event_rows(label: str, events: Counter, overhead: float) -> list[dict]:
    total = sum(events.values())
    return [
        {"metric": f"{label}: Dagster events in the run", "value": total, "unit": "events",
         "detail": dict(events.most_common())},
        {"metric": f"{label}: overhead per event (CLI - direct subprocess)", "value": overhead / total * 1000,
         "unit": "ms"},
    ]


def run(quick: bool = False) -> list[dict]:
    from bench.orchestration_daemon import daemon_rows

    sizes = QUICK if quick else FULL
    rows = [{"metric": "machine load at start (1/5/15 min), 2 shared cores", "value": _load(), "unit": ""}]
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-orch-") as tmp:
        tmp = Path(tmp)
        rows += daemon_rows(tmp, quick)  # first: the part most likely to fail on a busy machine
        small_root = tmp / "small"
        small = generate_corpus(small_root, sessions=sizes["small"], projects=PROJECTS)
        _warm(small_root)
        _direct_in_process(tmp / "warm-imports", small_root)  # imports and first-touch costs, not measured
        cold = _cold(small_root, tmp)
        cli, sub = cold["cli"], cold["direct_sub"]
        n = f"{small['files']:,} sessions ({small['bytes'] / 1e6:.0f} MB, {PROJECTS} projects)"
        events = run_events(cold["homes"]["cli"] / "dagster", cold["cli_run"]["run_id"])
        rows += [
            _ratio_row(f"{n}, cold: sessionlake ingest vs direct call in process", cli.elapsed_sec, cold["direct"]),
            _ratio_row(f"{n}, cold: sessionlake ingest vs direct call in a subprocess", cli.elapsed_sec,
                       sub.elapsed_sec),
            {**_ratio_row(f"{n}, cold: CPU time, sessionlake ingest vs direct call in a subprocess", cli.cpu_sec,
                          sub.cpu_sec, target=None), "unit": "CPU s"},
            {"metric": f"{n}, cold: CPU time, direct call in process", "value": cold["direct_cpu"], "unit": "CPU s"},
            *_event_rows(n, events, cli.elapsed_sec - sub.elapsed_sec),
        ]
        inc = _increment(small_root, tmp, cold["homes"])
        inc_events = run_events(cold["homes"]["cli"] / "dagster", inc["cli_run"]["run_id"])
        rows += [
            {"metric": f"{INCREMENT_SESSIONS} new sessions in {inc['projects']} projects: sessionlake ingest",
             "value": inc["cli"], "unit": "s", "baseline": inc["direct_sub"], "ratio": inc["cli"] / inc["direct_sub"],
             "target": f"<= {INCREMENT_TARGET_SEC} s", "ok": inc["cli"] <= INCREMENT_TARGET_SEC},
            {"metric": f"{INCREMENT_SESSIONS} new sessions: direct call in process", "value": inc["direct"],
             "unit": "s"},
            {"metric": "floor of one Dagster run: import dagster, open the instance, a no-op asset, fresh process",
             "value": inc["floor"], "unit": "s", "detail": {k: round(v, 3) for k, v in inc["floor_phases"].items()}},
            {"metric": f"{INCREMENT_SESSIONS} new sessions: Dagster events in the run",
             "value": sum(inc_events.values()), "unit": "events", "detail": dict(inc_events.most_common())},
        ]
        shutil.rmtree(small_root)
        large_root = tmp / "large"
        large = generate_corpus(large_root, sessions=sizes["large"], projects=PROJECTS)
        _warm(large_root)
        n = f"{large['files']:,} sessions ({large['bytes'] / 1e6:.0f} MB, {PROJECTS} projects)"
        direct, _ = _direct_subprocess(tmp / "large-direct", large_root)
        cli, result = _cli(tmp / "large-cli", large_root)
        large_events = run_events(tmp / "large-cli" / "dagster", result["run_id"])
        rows += [
            {"metric": f"{n}, cold: sessionlake ingest peak RSS (process tree)", "value": cli.peak_tree_rss / MB,
             "unit": "MB", "baseline": direct.peak_tree_rss / MB, "ratio": cli.peak_tree_rss / direct.peak_tree_rss,
             "target": f"<= {PEAK_RSS_TARGET / MB:.0f} MB", "ok": cli.peak_tree_rss <= PEAK_RSS_TARGET},
            {"metric": f"{n}, cold: largest single process (ru_maxrss), CLI", "value": cli.max_rss / MB,
             "unit": "MB", "baseline": direct.max_rss / MB, "ratio": cli.max_rss / direct.max_rss},
            _ratio_row(f"{n}, cold: sessionlake ingest vs direct call in a subprocess", cli.elapsed_sec,
                       direct.elapsed_sec, target=None),
            {**_ratio_row(f"{n}, cold: CPU time, sessionlake ingest vs direct call in a subprocess", cli.cpu_sec,
                          direct.cpu_sec, target=None), "unit": "CPU s"},
            *_event_rows(n, large_events, cli.elapsed_sec - direct.elapsed_sec),
        ]
        shutil.rmtree(large_root)
    rows.append({"metric": "machine load at end (1/5/15 min)", "value": _load(), "unit": ""})
    return rows
