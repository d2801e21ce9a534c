"""Ingest benchmark (issue 2): cold usage ingest vs the orjson floor and DuckDB's JSON reader,
end-to-end ``sessionlake ingest``, and a no-change sensor tick over 100,000 files.

Run: ``python -m bench ingest`` (``--quick`` for 200 sessions and 10,000 files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

from bench.corpus import generate_corpus

INGEST_TARGET_RATIO = 3.0
TICK_TARGET_SEC = 1.0


def _orjson_floor(root: Path) -> float:
    started = time.perf_counter()
    for path in root.rglob("*.jsonl"):
        with open(path, "rb") as f:
            for line in f:
                orjson.loads(line)
    return time.perf_counter() - started


def _duckdb_read_json(root: Path) -> float:
    started = time.perf_counter()
    with duckdb.connect() as conn:
        conn.execute(
            "SELECT sum(CAST(json_extract(json, '$.message.usage.output_tokens') AS BIGINT)) "
            "FROM read_ndjson_objects(?)", [str(root / "*" / "*.jsonl")]
        ).fetchall()
    return time.perf_counter() - started


def _usage_ingest(root: Path, home: Path, expected: dict) -> float:
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import run_processors
    from resources.state.store import StateStore
    from resources.usage.reports import usage_report

    state = StateStore(home / "state.duckdb")
    started = time.perf_counter()
    stats = run_processors([UsageProcessor()], root, state)["usage"]
    elapsed = time.perf_counter() - started
    with state.connect() as conn:
        totals = usage_report(conn, "daily")["totals"]
    got = (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"], totals["cacheReadTokens"])
    want = (expected["input"], expected["output"], expected["cache_creation"], expected["cache_read"])
    if got != want or stats["errors"]:
        raise AssertionError(f"usage ingest counted {got}, corpus holds {want} ({stats['errors']} errors)")
    return elapsed


def _cli_ingest(root: Path, home: Path, only: list[str]) -> float:
    env = {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(root),
           "DAGSTER_HOME": str(home / "dagster")}
    args = [sys.executable, "-m", "pipelines.cli.main", "ingest", "--json"]
    for name in only:
        args += ["--only", name]
    started = time.perf_counter()
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - started
    if not json.loads(out)["success"]:
        raise AssertionError(f"sessionlake ingest failed: {out[-2000:]}")
    return elapsed


def _sensor_tick(files: int, workdir: Path) -> tuple[float, float, float]:
    """Seconds for the first tick, a no-change tick, and the floor (a bare scandir + stat of every
    file) over a tree of ``files`` small files in 100 projects."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.defs.resources import StateResource
    from pipelines.defs.sessions.sensors import session_files_tick

    root = workdir / "many"
    per_project = files // 100
    for p in range(100):
        d = root / f"-home-dev-p{p:03d}"
        d.mkdir(parents=True)
        for s in range(per_project):
            (d / f"{s:05d}.jsonl").write_bytes(b"{}\n")
    state = StateResource(home=str(workdir / "tick-home"), sessions_dir=str(root))
    with dg.instance_for_test() as instance:
        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                          resources={"state": state}, repository_def=defs.get_repository_def())
            started = time.perf_counter()
            result = session_files_tick(ctx, state)
            return time.perf_counter() - started, result

        first, result = tick(None)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        second, again = tick(result.cursor)
        if again.run_requests:
            raise AssertionError("a no-change tick requested runs")
    started = time.perf_counter()
    for project in os.scandir(root):
        for entry in os.scandir(project.path):
            entry.stat(follow_symlinks=False)
    floor = time.perf_counter() - started
    return first, second, floor


def run(quick: bool = False) -> list[dict]:
    sessions, tick_files = (200, 10_000) if quick else (2000, 100_000)
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "projects"
        corpus = generate_corpus(root, sessions=sessions)
        mb = corpus["bytes"] / 1e6
        _orjson_floor(root)  # warm the page cache so every reader sees the same disk state
        floor = _orjson_floor(root)
        peer = _duckdb_read_json(root)
        usage = _usage_ingest(root, tmp / "home-usage", corpus)
        cli_usage = _cli_ingest(root, tmp / "home-cli-usage", ["usage"])
        cli_all = _cli_ingest(root, tmp / "home-cli-all", [])
        cli_again = _cli_ingest(root, tmp / "home-cli-all", [])
        first_tick, tick, stat_floor = _sensor_tick(tick_files, tmp)
    return [
        {"metric": f"corpus: {corpus['files']} sessions", "value": mb, "unit": "MB"},
        {"metric": "floor: orjson pass over every line", "value": floor, "unit": "s"},
        {"metric": "peer: duckdb read_ndjson_objects + json_extract", "value": peer, "unit": "s",
         "baseline": floor, "ratio": peer / floor},
        {"metric": "cold usage ingest (state + usage rows written)", "value": usage, "unit": "s", "baseline": floor,
         "ratio": usage / floor, "target": f"<= {INGEST_TARGET_RATIO}x floor",
         "ok": usage / floor <= INGEST_TARGET_RATIO},
        {"metric": "usage ingest throughput", "value": mb / usage, "unit": "MB/s"},
        {"metric": "sessionlake ingest --only usage (end to end, new process)", "value": cli_usage, "unit": "s",
         "baseline": floor, "ratio": cli_usage / floor},
        {"metric": "sessionlake ingest (usage + memory + archive)", "value": cli_all, "unit": "s",
         "baseline": floor, "ratio": cli_all / floor},
        {"metric": "sessionlake ingest again, nothing changed", "value": cli_again, "unit": "s"},
        {"metric": f"sensor first tick, {tick_files:,} files", "value": first_tick, "unit": "s"},
        {"metric": f"floor: scandir + stat of {tick_files:,} files", "value": stat_floor, "unit": "s"},
        {"metric": f"sensor no-change tick, {tick_files:,} files", "value": tick, "unit": "s",
         "baseline": stat_floor, "ratio": tick / stat_floor, "target": f"< {TICK_TARGET_SEC} s",
         "ok": tick < TICK_TARGET_SEC},
    ]
