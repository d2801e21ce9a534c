"""MCP benchmark (issue 21): recall through ``sessionlake mcp`` and the SDK's stdio client, beside recall in process.

1. Build the memory ``bench recall`` builds: the 2,000-session corpus ingested, topped up to 100,000
   records (``--quick``: 200 sessions, 20,000 records).
2. In process: the same cues through `resources.memory.recall.recall` with the provenance queue on,
   as the server runs it: p50/p99.
3. Through MCP: ``sessionlake mcp`` started by the SDK's stdio client (``mcp.Client`` over
   ``StdioServerParameters``), as an agent starts it. Start to initialized, start to the first
   ``recall`` answered (LanceDB loaded and the table opened on the way), then the same cues as
   ``tools/call recall`` round trips: p50/p99, the ratio to in-process the protocol's cost.
4. The floor of a server start: a fresh interpreter importing the SDK's server (``import
   mcp.server.mcpserver``), best of 3, beside start to initialized.

Run: ``python -m bench mcp`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import generate_corpus
from bench.recall import _cues, _ingest, _pct, _recalls, _top_up

P50_TARGET_MS = 20.0
P99_TARGET_MS = 50.0
FIRST_ANSWER_TARGET_S = 1.0
K = 10


async def _through_mcp(home: Path, cues: list[str]) -> tuple[float, float, list[float]]:
    """(start to initialized s, start to first recall answered s, per-call round trips ms)."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp_types import Implementation

    env = {"SESSIONLAKE_HOME": str(home), "SESSIONLAKE_AGENTS": "claude", "LANCE_LOG": "error"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "pipelines.cli.main", "mcp"], env=env,
                                   cwd=str(Path(__file__).resolve().parents[1]))
    started = time.perf_counter()
    async with Client(params, client_info=Implementation(name="bench", version="1")) as client:
        ready = time.perf_counter() - started
        first = await client.call_tool("recall", {"query": cues[0], "k": K})
        first_answer = time.perf_counter() - started
        if first.is_error:
            raise AssertionError(f"recall through MCP failed: {first.content[0].text}")
        latencies = []
        for cue in cues:
            t = time.perf_counter()
            result = await client.call_tool("recall", {"query": cue, "k": K})
            latencies.append((time.perf_counter() - t) * 1000)
            if result.is_error:
                raise AssertionError(f"recall through MCP failed: {result.content[0].text}")
    return ready, first_answer, latencies


def _sdk_import_floor() -> float:
    """Seconds for a fresh interpreter to import the SDK's server, best of 3."""
    import subprocess

    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import mcp.server.mcpserver"], check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def run(quick: bool = False) -> list[dict]:
    sessions, target, n_calls = (200, 20_000, 200) if quick else (2000, 100_000, 1000)
    rng = random.Random(21)
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-mcp-") as tmp:
        tmp = Path(tmp)
        generate_corpus(tmp / "projects", sessions=sessions)
        home = tmp / "home"
        store, _, _ = _ingest(tmp / "projects", home)
        records = _top_up(store, target, rng)
        store.refresh_indexes(tiered=True)  # index every row, as maintenance leaves the table
        cues = _cues(rng, n_calls)
        store.enable_provenance_queue()
        _recalls(store, cues[:20])  # warm caches for both paths alike
        in_process, _, _ = _recalls(store, cues)
        store.provenance_queue.flush(timeout=120)
        store.disable_provenance_queue()
        os.environ.setdefault("LANCE_LOG", "error")
        ready, first, mcp_ms = asyncio.run(_through_mcp(home, cues))
        floor = _sdk_import_floor()

    p50, p99, base50, base99 = _pct(mcp_ms, .5), _pct(mcp_ms, .99), _pct(in_process, .5), _pct(in_process, .99)
    return [
        {"metric": "records", "value": records, "unit": "rows"},
        {"metric": f"recall through MCP p50 ({n_calls} tools/call, k={K})", "value": round(p50, 2), "unit": "ms",
         "baseline": round(base50, 2), "ratio": round(p50 / base50, 2), "target": f"< {P50_TARGET_MS}",
         "ok": p50 < P50_TARGET_MS},
        {"metric": f"recall through MCP p99 ({n_calls} tools/call, k={K})", "value": round(p99, 2), "unit": "ms",
         "baseline": round(base99, 2), "ratio": round(p99 / base99, 2), "target": f"< {P99_TARGET_MS}",
         "ok": p99 < P99_TARGET_MS},
        {"metric": "server start to initialized (baseline: a fresh python importing the SDK's server)",
         "value": round(ready, 3), "unit": "s", "baseline": round(floor, 3), "ratio": round(ready / floor, 2)},
        {"metric": "server start to first recall answered", "value": round(first, 3), "unit": "s",
         "target": f"< {FIRST_ANSWER_TARGET_S}", "ok": first < FIRST_ANSWER_TARGET_S},
    ]
