"""Dagster's storage on PostgreSQL against the default SQLite instance (issue 13 item 1; the
orchestration overhead budget of issue 9), side by side in one run on the same tree:

- ``sessionlake ingest`` (a subprocess, one in-process run) on a fresh data home with a fresh
  instance of each kind, then again after 10 new sessions in 10 projects (the steady state: the
  instance exists), against the processors called directly in a subprocess (`bench.direct`);
  the run's events (from the instance's event log) and the overhead per event, (CLI - direct) / events;
- the session sensor's tick through Dagster's own evaluation (``evaluate_tick``), with nothing
  changed and with one file changed, median of several, on each ingested instance;
- the storage's own cost of one event: engine events written one by one to a run's event log.

The server is started by the benchmark (`tests.postgres_server`) on loopback with fsync on, so its
commits are as durable as SQLite's. Run: ``python -m bench postgres`` (``--quick``: 200 sessions).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.corpus import generate_corpus
from bench.orchestration import _add_sessions, _direct_subprocess, _load, _warm, run_events
from bench.proc import python_env, run_measured

PROJECTS = 40
SESSIONS = {False: 2000, True: 200}
TICKS = 5
EVENTS = 200
KINDS = ("sqlite", "postgres")


def _ingest(home: Path, root: Path, env: dict[str, str]):
    import json
    import sys

    m = run_measured([sys.executable, "-m", "pipelines.cli.main", "ingest", "--json"], python_env(home, root, **env))
    if m.returncode != 0:
        raise AssertionError(f"sessionlake ingest exited {m.returncode}: {m.stderr[-2000:]}")
    return m, json.loads(m.stdout)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tick_times(home: Path, root: Path, env: dict[str, str]) -> dict[str, float]:
    """Median seconds of a session-sensor tick on the instance at ``home/dagster``: no change, one change."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.defs.resources import StateResource

    with _environ(python_env(home, root, **env)), dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
        repo = defs.get_repository_def()

        def tick(cursor):
            context = dg.build_sensor_context(instance=inst, instance_ref=inst.get_ref(), cursor=cursor,
                                              resources={"state": StateResource()}, repository_def=repo)
            started = time.perf_counter()
            result = repo.get_sensor_def("session_files_sensor").evaluate_tick(context)
            return time.perf_counter() - started, result

        _, first = tick(None)
        cursor = first.cursor
        idle, changed = [], []
        path = next(root.rglob("*.jsonl"))
        for _ in range(TICKS):
            elapsed, result = tick(cursor)
            assert not result.run_requests, "nothing changed"
            idle.append(elapsed)
            with open(path, "a") as f:
                f.write('{"type": "summary", "summary": "bench"}\n')
            elapsed, result = tick(cursor)
            assert len(result.run_requests) == 1, "one change, one run request"
            changed.append(elapsed)
            cursor = result.cursor
    return {"idle": statistics.median(idle), "changed": statistics.median(changed)}


def _event_write_ms(home: Path, root: Path, env: dict[str, str]) -> float:
    """Milliseconds to store one event in the run's event log (``EVENTS`` engine events, one by one, as a
    run's events are): the storage's own cost per event, without the run's step or imports."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.defs.sessions.assets import JOB_NAME

    with _environ(python_env(home, root, **env)), dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
        run = inst.create_run_for_job(defs.resolve_job_def(JOB_NAME))
        started = time.perf_counter()
        for i in range(EVENTS):
            inst.report_engine_event(f"bench event {i}", run)
        return (time.perf_counter() - started) / EVENTS * 1000


def run(quick: bool = False) -> list[dict]:
    from tests.postgres_server import PostgresServer, find_binaries

    if find_binaries() is None:
        return [{"metric": "PostgreSQL server binaries (initdb, pg_ctl) not found: skipped", "value": None,
                 "unit": "", "ok": None}]
    rows = [{"metric": "machine load at start (1/5/15 min), 2 shared cores", "value": _load(), "unit": ""}]
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-pg-") as tmp, \
            PostgresServer.start(fsync=True) as server:
        tmp = Path(tmp)
        root = tmp / "tree"
        tree = generate_corpus(root, sessions=SESSIONS[quick], projects=PROJECTS)
        _warm(root)
        n = f"{tree['files']:,} sessions ({tree['bytes'] / 1e6:.0f} MB, {PROJECTS} projects)"
        envs = {"sqlite": {}, "postgres": {**server.env(server.create_database("bench")),
                                           "SESSIONLAKE_DAGSTER_STORAGE": "postgres"}}
        homes = {kind: tmp / kind for kind in KINDS}
        direct, _ = _direct_subprocess(tmp / "direct", root)
        cold = {kind: _ingest(homes[kind], root, envs[kind]) for kind in KINDS}
        _add_sessions(root, tmp)
        direct_inc, _ = _direct_subprocess(tmp / "direct", root)
        inc = {kind: _ingest(homes[kind], root, envs[kind]) for kind in KINDS}
        ticks = {kind: _tick_times(homes[kind], root, envs[kind]) for kind in KINDS}
        writes = {kind: _event_write_ms(homes[kind], root, envs[kind]) for kind in KINDS}
        for label, runs, baseline in ((f"{n}, cold (new instance)", cold, direct.elapsed_sec),
                                      ("10 new sessions in 10 projects (instance exists)", inc,
                                       direct_inc.elapsed_sec)):
            events = {}
            for kind in KINDS:
                with _environ(envs[kind]):  # the Postgres instance reads its connection from there
                    events[kind] = run_events(homes[kind] / "dagster", runs[kind][1]["run_id"])
            rows += _compare(label, runs, events, baseline)
        for what in ("idle", "changed"):
            rows.append({"metric": f"session sensor tick ({'nothing changed' if what == 'idle' else 'one file changed'}"
                                   f", median of {TICKS}): Postgres vs SQLite", "value": ticks["postgres"][what],
                         "unit": "s", "baseline": ticks["sqlite"][what],
                         "ratio": ticks["postgres"][what] / ticks["sqlite"][what]})
        rows.append({"metric": f"storing one event ({EVENTS} engine events, one by one): Postgres vs SQLite",
                     "value": writes["postgres"], "unit": "ms", "baseline": writes["sqlite"],
                     "ratio": writes["postgres"] / writes["sqlite"]})
    rows.append({"metric": "machine load at end (1/5/15 min)", "value": _load(), "unit": ""})
    return rows


def _compare(label: str, runs: dict, events: dict[str, Counter], direct_sec: float) -> list[dict]:
    pg, lite = (runs[k][0] for k in ("postgres", "sqlite"))
    rows = [{"metric": f"{label}: sessionlake ingest, Postgres vs SQLite", "value": pg.elapsed_sec, "unit": "s",
             "baseline": lite.elapsed_sec, "ratio": pg.elapsed_sec / lite.elapsed_sec},
            {"metric": f"{label}: the processors called directly (subprocess)", "value": direct_sec, "unit": "s"}]
    per_event = {}
    for kind in KINDS:
        total = sum(events[kind].values())
        per_event[kind] = (runs[kind][0].elapsed_sec - direct_sec) / total * 1000
        rows.append({"metric": f"{label}: Dagster events in the run, {kind}", "value": total, "unit": "events",
                     "detail": dict(events[kind].most_common())})
    rows.append({"metric": f"{label}: overhead per event (CLI - direct), Postgres vs SQLite",
                 "value": per_event["postgres"], "unit": "ms", "baseline": per_event["sqlite"],
                 "ratio": per_event["postgres"] / per_event["sqlite"]})
    return rows
