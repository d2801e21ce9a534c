"""Capture inbox benchmark, side by side in one run on one disk.

- durable appends/s at 1 and 8 threads against the floor: a bare write + fsync + rename + fsync of
  the folder, the least any crash-safe publish can do, measured in the same folder tree;
- append latency at depth 0 and at depth 10,000 (the same unless append lists the folder), and on a
  full queue where every append also moves the oldest envelope to overflow/;
- ``sessionlake capture`` wall time as a hook runs it (a fresh process), against a bare interpreter;
- drain throughput from the inbox into the Lance ``records`` table.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from resources.capture.drain import drain_to_lance
from resources.capture.queue import DEFAULT_MAX_SIZE, CaptureQueue
from resources.memory.lance import LanceStore

REPO = Path(__file__).resolve().parents[1]
RECORD = {"text": "Remember: the staging deploy needs the VPN; Привет 😀", "session_id": "bench", "role": "user"}


def _floor_publish(folder: Path, name: str, data: bytes) -> None:
    temp = folder / f".{name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, folder / name)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _rate(threads: int, per_thread: int, op) -> float:
    """Operations per second with ``threads`` threads each calling ``op(thread, i)`` ``per_thread`` times."""
    def work(t: int) -> None:
        for i in range(per_thread):
            op(t, i)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return threads * per_thread / (time.perf_counter() - started)


def _append_latency_ms(queue: CaptureQueue, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        queue.append(RECORD)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _fill(queue: CaptureQueue, depth: int) -> None:
    _rate(8, depth // 8, lambda t, i: queue.append(RECORD))


def _throughput_rows(root: Path, per_thread_1: int, per_thread_8: int) -> list[dict]:
    rows = []
    data = json.dumps({"ulid": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "record": RECORD}, ensure_ascii=False).encode()
    for threads, per_thread in ((1, per_thread_1), (8, per_thread_8)):
        floor_dir = root / f"floor-{threads}"
        floor_dir.mkdir()
        floor = _rate(threads, per_thread, lambda t, i, d=floor_dir: _floor_publish(d, f"{t}-{i}.json", data))
        queue = CaptureQueue(root / f"queue-{threads}")
        rate = _rate(threads, per_thread, lambda t, i, q=queue: q.append(RECORD))
        rows.append({"metric": f"durable appends/s, {threads} thread(s)", "value": round(rate, 1), "unit": "appends/s",
                     "baseline": round(floor, 1), "ratio": round(rate / floor, 3), "target": ">= 0.5 x floor",
                     "ok": rate >= 0.5 * floor})
    return rows


def _depth_rows(root: Path, samples: int, depth: int) -> list[dict]:
    empty = CaptureQueue(root / "depth-0", max_size=2 * depth)
    at_zero = _append_latency_ms(empty, samples)
    deep = CaptureQueue(root / "depth-n", max_size=2 * depth)
    _fill(deep, depth)
    at_depth = _append_latency_ms(deep, samples)
    full = CaptureQueue(root / "full", max_size=depth)
    _fill(full, depth)
    at_full = _append_latency_ms(full, samples)
    assert full.pending_count() == depth and len(full.list_overflow()) == samples
    return [
        {"metric": "append latency at depth 0 (median)", "value": round(at_zero, 3), "unit": "ms"},
        {"metric": f"append latency at depth {depth:,} (median)", "value": round(at_depth, 3), "unit": "ms",
         "baseline": round(at_zero, 3), "ratio": round(at_depth / at_zero, 3), "target": "<= 1.5 x depth 0",
         "ok": at_depth <= 1.5 * at_zero},
        {"metric": f"append latency, full queue of {depth:,} (each append moves one to overflow/)",
         "value": round(at_full, 3), "unit": "ms", "baseline": round(at_zero, 3), "ratio": round(at_full / at_zero, 3)},
    ]


def _wall_ms(argv: list[str], env: dict, runs: int, stdin: bytes = b"") -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _cli_rows(root: Path, runs: int) -> list[dict]:
    env = {**os.environ, "SESSIONLAKE_HOME": str(root / "cli-home")}
    script = Path(sys.executable).with_name("sessionlake")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli.main"]
    bare = _wall_ms([sys.executable, "-c", "pass"], env, runs)
    wall = _wall_ms([*argv, "capture", "--text", "hook wall time"], env, runs)
    hook = _wall_ms([*argv, "capture", "--from-hook"], env, runs, stdin=(
        b'{"session_id":"s","hook_event_name":"UserPromptSubmit","prompt":"how fast is the hook?"}'))
    return [
        {"metric": "sessionlake capture --text, process wall time (median)", "value": round(wall, 1), "unit": "ms",
         "baseline": round(bare, 1), "ratio": round(wall / bare, 2), "target": "< 100 ms", "ok": wall < 100},
        {"metric": "sessionlake capture --from-hook, process wall time (median)", "value": round(hook, 1),
         "unit": "ms", "baseline": round(bare, 1), "ratio": round(hook / bare, 2), "target": "< 100 ms",
         "ok": hook < 100},
    ]


def _drain_rows(root: Path, records: int) -> list[dict]:
    queue = CaptureQueue(root / "drain", max_size=DEFAULT_MAX_SIZE + records)
    _fill(queue, records)
    store = LanceStore(root / "lance")
    store.open_table("records")
    stats = drain_to_lance(queue, store)
    assert stats.records == records and store.count("records") == records
    return [{"metric": f"drain into Lance records ({records:,} envelopes, {stats.batches} commits)",
             "value": round(stats.records_per_sec, 1), "unit": "records/s", "target": ">= 5,000",
             "ok": stats.records_per_sec >= 5000}]


def run(quick: bool) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="sessionlake-bench-capture-", dir=os.environ.get("SESSIONLAKE_BENCH_DIR")))
    load = os.getloadavg()[0]
    try:
        rows = [{"metric": f"machine load average at start ({os.cpu_count()} CPUs; other work shares the disk)",
                 "value": round(load, 2), "unit": "runnable"}]
        rows += _throughput_rows(root, per_thread_1=300 if quick else 2000, per_thread_8=60 if quick else 400)
        rows += _depth_rows(root, samples=100 if quick else 500, depth=2_000 if quick else 10_000)
        rows += _cli_rows(root, runs=7 if quick else 21)
        rows += _drain_rows(root, records=2_000 if quick else 10_000)
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
