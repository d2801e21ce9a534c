"""``sessionlake statusline`` against ``ccusage statusline``, side by side on the same tree in one run.

A generated projects tree (bench/corpus.py, 2,000 sessions; 200 with --quick) plus one live session
with responses in the last hour, ingested into a sessionlake warehouse first (as the sensor keeps it).
Each tool is run as Claude Code runs it, a fresh process with the hook JSON on stdin, with its
default options, alternating, in two cases:
- grown: one new response is appended to the live session before each call (what every prompt
  does: ccusage's cache is keyed on the transcript, sessionlake tops up that file);
- unchanged: called again at once with nothing new (both tools reuse their last line for 1 s);
- idle: called again after that second (no cache; what a refresh without a new message costs).
The peer is the npm package ccusage, pinned in bench/ccusage.py; without npm or node, or if the
install fails, the peer is skipped with a message. Both lines are also checked to show the
same session, today and block costs for the same state of the tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.ccusage import ccusage_launcher
from bench.corpus import generate_corpus
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.state.store import StateStore

LIVE_PROJECT = "-home-dev-live"
LIVE_SESSION = "5f1c0a3e-live-4d2b-9c1e-bench0000001"
MODEL = "claude-sonnet-4-20250514"
_COSTS = re.compile(r"\$(-?[\d.]+) session / \$(-?[\d.]+) today / (?:\$(-?[\d.]+) block|No active block)")


def _response(n: int, ts: datetime) -> bytes:
    return orjson.dumps({
        "parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/home/dev/live",
        "sessionId": LIVE_SESSION, "version": "2.0.0", "gitBranch": "main", "type": "assistant",
        "requestId": f"req_live_{n}", "uuid": f"live-{n}",
        "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "message": {"id": f"msg_live_{n}", "type": "message", "role": "assistant", "model": MODEL,
                    "content": [{"type": "text", "text": "done"}],
                    "usage": {"input_tokens": 12, "output_tokens": 400, "cache_creation_input_tokens": 1500,
                              "cache_read_input_tokens": 30000}},
    }) + b"\n"


def _ccusage() -> tuple[list[str] | None, str]:
    launcher, why = ccusage_launcher()
    return ([launcher, "statusline"] if launcher else None), why


def _call(argv: list[str], env: dict, payload: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, input=payload, capture_output=True, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr.decode()[-300:]}")
    return elapsed, result.stdout.decode().strip()


def run(quick: bool) -> list[dict]:
    sessions, calls = (200, 8) if quick else (2000, 10)
    work = Path(tempfile.mkdtemp(prefix="sessionlake-bench-statusline-"))
    try:
        return _run(work, sessions, calls)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, sessions: int, calls: int) -> list[dict]:
    claude, home = work / "claude", work / "sessionlake"
    projects = claude / "projects"
    corpus = generate_corpus(projects, sessions=sessions)
    live = projects / LIVE_PROJECT / f"{LIVE_SESSION}.jsonl"
    live.parent.mkdir(parents=True)
    now = datetime.now(UTC)
    live.write_bytes(b"".join(_response(n, now - timedelta(minutes=60 - n)) for n in range(10)))
    run_processors([UsageProcessor()], projects, StateStore(home / "state.duckdb"))

    payload = json.dumps({"session_id": LIVE_SESSION, "transcript_path": str(live), "cwd": "/home/dev/live",
                          "model": {"id": MODEL, "display_name": "Sonnet 4"},
                          "workspace": {"current_dir": "/home/dev/live"}}).encode()
    env = {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(projects),
           "CLAUDE_CONFIG_DIR": str(claude), "HOME": str(work / "home"), "TZ": "UTC"}
    (work / "home").mkdir()
    tools = {"sessionlake": [sys.executable, "-m", "pipelines.cli.main", "statusline"]}
    peer, why = _ccusage()
    if peer is None:
        print(f"bench statusline: ccusage skipped: {why}", file=sys.stderr)
    else:
        tools["ccusage"] = peer
    appended = 10
    cases = ("grown", "unchanged", "idle")
    times: dict[tuple[str, str], list[float]] = {(t, c): [] for t in tools for c in cases}
    for i in range(calls + 1):  # the first round warms caches and is not counted
        for tool, argv in tools.items():
            with open(live, "ab") as f:
                f.write(_response(appended, datetime.now(UTC)))
            appended += 1
            grown, _ = _call(argv, env, payload)
            unchanged, _ = _call(argv, env, payload)
            time.sleep(1.1)
            idle, _ = _call(argv, env, payload)
            if i:
                for case, ms in zip(cases, (grown, unchanged, idle), strict=True):
                    times[(tool, case)].append(ms)

    time.sleep(1.1)  # past both caches: the figures both tools compute for the same state
    lines = {tool: _call(argv, env, payload)[1] for tool, argv in tools.items()}
    rows = [{"metric": "corpus", "value": corpus["files"] + 1, "unit": "session files",
             "baseline": round(corpus["bytes"] / 1e6, 1), "target": "MB (baseline column)"}]
    for case in cases:
        ours = statistics.median(times[("sessionlake", case)])
        row = {"metric": f"statusline wall, {case} (median of {calls})", "value": round(ours, 1), "unit": "ms",
               "target": "<= 1x ccusage"}
        if "ccusage" in tools:
            peer_ms = statistics.median(times[("ccusage", case)])
            row.update(baseline=round(peer_ms, 1), ratio=round(ours / peer_ms, 2), ok=ours <= peer_ms)
        rows.append(row)
    if "ccusage" in tools:
        ours, theirs = _COSTS.search(lines["sessionlake"]), _COSTS.search(lines["ccusage"])
        same = bool(ours and theirs) and all(
            float(a or 0) == float(b or 0) for a, b in zip(ours.groups(), theirs.groups(), strict=True))
        rows.append({"metric": "same session/today/block costs", "value": same, "unit": "",
                     "baseline": lines["ccusage"], "target": lines["sessionlake"], "ok": same})
    return rows
