"""``python -m bench agents``: reports over a mixed corpus of every supported agent, side by side with
``ccusage daily --json`` on the same files in the same run.

The corpus (bench/agent_corpus.py; 2,000 sessions, 300 with --quick) is a generated ``$HOME`` holding
Claude Code, Codex, Gemini CLI, OpenCode and Qwen Code sessions where each agent keeps them; both
tools find them from ``HOME`` alone. Measured, each as a fresh process (peak RSS of its process tree):
- cold: sessionlake on an empty data home, ``sessionlake ingest --only usage`` (one Dagster run)
  then ``sessionlake usage daily --json``, against ccusage's first ``daily --json``; and the same
  with the usage processor called directly (``python -m bench.agents``, no Dagster) on another
  empty home, which shows what the run itself costs;
- warm: the report again from the warehouse the ingest (or the sensor) keeps, against ccusage again
  (it has no cache: every call reads every file), alternating, median of several calls;
- totals: per agent, ``--by-agent`` from both tools, against the totals the corpus was generated
  with; where ccusage differs, the row says by how much (the README says why).
The peer is ccusage, pinned in bench/ccusage.py; without node or npm it is skipped with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.agent_corpus import generate_agents
from bench.ccusage import ccusage_launcher
from bench.proc import run_measured

FIELDS = {"input": "inputTokens", "output": "outputTokens", "cache_creation": "cacheCreationTokens",
          "cache_read": "cacheReadTokens"}
_AGENT_ENV = ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "GEMINI_DATA_DIR", "XDG_DATA_HOME",
              "OPENCODE_DATA_DIR", "QWEN_DATA_DIR", "SESSIONLAKE_SESSIONS_DIR", "SESSIONLAKE_AGENTS",
              "SESSIONLAKE_CODEX_DIR", "SESSIONLAKE_GEMINI_DIR", "SESSIONLAKE_OPENCODE_DIR", "SESSIONLAKE_QWEN_DIR")


def run(quick: bool) -> list[dict]:
    sessions, calls = (300, 3) if quick else (2000, 5)
    work = Path(tempfile.mkdtemp(prefix="sessionlake-bench-agents-"))
    try:
        return _run(work, sessions, calls)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _per_agent(report: dict) -> dict[str, dict]:
    """Per agent, the token fields, totalTokens and totalCost summed over a ``--by-agent`` report's rows."""
    sums: dict[str, dict] = {}
    for row in report["daily"]:
        for part in row.get("agents", []):
            acc = sums.setdefault(part["agent"], dict.fromkeys([*FIELDS.values(), "totalTokens", "totalCost"], 0))
            for name in acc:
                acc[name] += part[name]
    return sums


def _mb(n: int) -> float:
    return round(n / 1e6, 1)


def _run(work: Path, sessions: int, calls: int) -> list[dict]:
    home = work / "user"
    corpus = generate_agents(home, sessions)
    base = {k: v for k, v in os.environ.items() if k not in _AGENT_ENV}
    base.update(HOME=str(home), TZ="UTC")
    ours_env = {**base, "SESSIONLAKE_HOME": str(work / "sl"), "DAGSTER_HOME": str(work / "sl" / "dagster")}
    cli = [sys.executable, "-m", "pipelines.cli.main"]
    report = [*cli, "usage", "daily", "--json"]
    launcher, why = ccusage_launcher()
    peer = [launcher, "daily", "--json", "--offline"] if launcher else None
    if peer is None:
        print(f"bench agents: ccusage skipped: {why}", file=sys.stderr)

    ingest = run_measured([*cli, "ingest", "--only", "usage"], ours_env)
    if ingest.returncode != 0:
        raise RuntimeError(f"sessionlake ingest exited {ingest.returncode}: {ingest.stderr[-500:]}")
    first = run_measured(report, ours_env)
    direct_env = {**ours_env, "SESSIONLAKE_HOME": str(work / "direct")}
    direct = run_measured([sys.executable, "-m", "bench.agents"], direct_env)
    if direct.returncode != 0:
        raise RuntimeError(f"direct usage ingest exited {direct.returncode}: {direct.stderr[-500:]}")
    direct_first = run_measured(report, direct_env)
    peer_first = run_measured(peer, base) if peer else None
    warm, peer_warm = [], []
    for _ in range(calls):
        warm.append(run_measured(report, ours_env))
        if peer:
            peer_warm.append(run_measured(peer, base))

    rows = [{"metric": "corpus", "value": corpus["files"], "unit": "files",
             "baseline": _mb(corpus["bytes"]), "target": "MB (baseline column); sessions: " + ", ".join(
                 f"{agent} {n}" for agent, n in corpus["sessions"].items())}]
    cold_sec = ingest.elapsed_sec + first.elapsed_sec
    cold_rss = max(ingest.peak_tree_rss, first.peak_tree_rss)
    warm_sec = statistics.median(m.elapsed_sec for m in warm)
    warm_rss = max(m.peak_tree_rss for m in warm)
    timed = [("cold report (ingest --only usage + usage daily --json)", cold_sec, peer_first and peer_first.elapsed_sec,
              "s"),
             ("cold report, usage processor called directly + usage daily --json",
              direct.elapsed_sec + direct_first.elapsed_sec, peer_first and peer_first.elapsed_sec, "s"),
             (f"warm report, usage daily --json (median of {calls})", warm_sec,
              peer_warm and statistics.median(m.elapsed_sec for m in peer_warm), "s"),
             ("cold: peak RSS of the process tree", _mb(cold_rss), peer_first and _mb(peer_first.peak_tree_rss), "MB"),
             ("cold, called directly: peak RSS", _mb(max(direct.peak_tree_rss, direct_first.peak_tree_rss)),
              peer_first and _mb(peer_first.peak_tree_rss), "MB"),
             ("warm: peak RSS of the process tree", _mb(warm_rss),
              peer_warm and _mb(max(m.peak_tree_rss for m in peer_warm)), "MB")]
    for metric, value, baseline, unit in timed:
        row = {"metric": metric, "value": round(value, 3), "unit": unit}
        if baseline:
            row.update(baseline=round(baseline, 3), ratio=round(value / baseline, 2))
        rows.append(row)
    rows.append({"metric": "  of which the Dagster ingest run", "value": round(ingest.elapsed_sec, 3), "unit": "s",
                 "baseline": round(ingest.cpu_sec, 1), "target": "CPU s (baseline column)"})

    ours = _per_agent(json.loads(run_measured([*report, "--by-agent"], ours_env).stdout))
    theirs = _per_agent(json.loads(run_measured([*peer, "--by-agent"], base).stdout)) if peer else {}
    for agent, want in corpus["agents"].items():
        got = ours.get(agent, {})
        expected = {FIELDS[k]: want[k] for k in FIELDS}
        expected["totalTokens"] = sum(want[k] for k in (*FIELDS, "extra_output"))
        same = all(got.get(k) == v for k, v in expected.items())
        row = {"metric": f"{agent}: tokens as generated", "value": same, "unit": "",
               "target": ", ".join(f"{k} {v:,}" for k, v in expected.items()), "ok": same}
        if not same:
            row["baseline"] = ", ".join(f"{k} {got.get(k, 0):,}" for k in expected)
        rows.append(row)
        if peer:
            peer_got = theirs.get(agent, {})
            diffs = {k: peer_got.get(k, 0) - got.get(k, 0) for k in (*expected, "totalCost")}
            rows.append({"metric": f"{agent}: ccusage - sessionlake", "value": all(
                abs(d) < 1e-6 for d in diffs.values()), "unit": "", "baseline": ", ".join(
                f"{k} {d:+,.4f}" if k == "totalCost" else f"{k} {d:+,}" for k, d in diffs.items()),
                "target": f"sessionlake cost ${got.get('totalCost', 0):,.4f}"})
    return rows


def ingest_usage_directly() -> int:
    """The usage processor over every agent's files, without Dagster (settings from the environment)."""
    from resources.config.settings import Settings
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import run_processors
    from resources.sources import found_sources, walk_all
    from resources.state.store import StateStore

    settings = Settings.from_env()
    files = list(walk_all(found_sources(settings)))
    stats = run_processors([UsageProcessor()], settings.sessions_dir, StateStore.from_settings(settings), files=files)
    return 1 if stats["usage"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(ingest_usage_directly())
