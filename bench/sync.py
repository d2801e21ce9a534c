"""Personal sync: 5 machines x 2,000 sessions (``--quick``: 5 x 100) through a shared folder.

Each machine is a HOME with a generated Claude Code tree (machine 1 also holds 5% of machine 0's
sessions: a ``~/.claude`` copied over) and a warehouse already holding its own usage (the usage
processor, called directly), so what is measured is the sync, not the first read of the sessions.
Then, each machine in turn, ``sessionlake sync --json`` as a subprocess: round 1 (push, and pull what
the machines before it pushed), round 2 (pull the rest), round 3 (nothing new).

The floor (``baseline``) is a plain copy of the same usage rows as Parquet: each machine exports the
rows it pushed (DuckDB ``COPY ... TO`` zstd Parquet) into a folder, then reads every other machine's
file into a table, each a subprocess too. Bytes: everything in the sync folder against the plain files.
Transcripts: box0 runs ``sync --with-transcripts`` (archives its tree, sends its packs), then box1
twice: once before (its own packs out, nothing to take in yet) and once after, taking in box0's
packs into its archive and memory. That second run is set against its floor, the memory processor
over box0's tree read where it lies (one process, called directly, into an empty memory).
The report on the merged warehouse (``usage daily --json`` on the last machine) is checked against one
usage ingest of the union of the trees, and timed against ccusage 20.0.24's ``daily --json`` over that
union (bench/ccusage.py; skipped with a message without node).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.ccusage import ccusage_launcher
from bench.corpus import generate_corpus
from bench.proc import run_measured

MACHINES = 5
SHARED_FRACTION = 0.05
TOTALS = """SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens)
            FROM usage_messages"""
_EXPORT = """
import sys, duckdb
state, out, source = sys.argv[1:4]
con = duckdb.connect(state, read_only=True)
con.execute(f'''COPY (SELECT dedup_key, message_id, request_id, ts, session_id, project, model, agent, is_sidechain,
    agent_id, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, cache_creation_1h_tokens,
    extra_output_tokens, cost_usd, computed_cost_usd, line_offset FROM usage_messages WHERE sync_source = '{source}'
    ORDER BY ts, dedup_key) TO '{out}' (FORMAT parquet, COMPRESSION zstd)''')
"""
_IMPORT = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
files = [f for f in sys.argv[2:]]
con.execute("CREATE TABLE IF NOT EXISTS copied AS SELECT * FROM read_parquet(?) LIMIT 0", [files])
con.execute("INSERT INTO copied SELECT * FROM read_parquet(?)", [files])
"""


def run(quick: bool = False) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        return _run(work, 100 if quick else 2000)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _machines(work: Path, sessions: int) -> list[Path]:
    homes = []
    for m in range(MACHINES):
        home = work / f"box{m}"
        generate_corpus(home / ".claude" / "projects", sessions=sessions, seed=1000 + m)
        homes.append(home)
    shared = sorted((homes[0] / ".claude" / "projects").rglob("*.jsonl"))[: int(sessions * SHARED_FRACTION)]
    for path in shared:
        target = homes[1] / ".claude" / "projects" / path.relative_to(homes[0] / ".claude" / "projects")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return homes


def _ingest(tree: Path, state_path: Path) -> None:
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import run_processors
    from resources.state.store import StateStore

    stats = run_processors([UsageProcessor()], tree, StateStore(state_path))["usage"]
    if stats["errors"]:
        raise AssertionError(f"usage ingest failed on {stats['error_files'][:3]}")


def _totals(state_path: Path) -> tuple:
    from resources.state.store import StateStore

    with StateStore(state_path).connect() as conn:
        return conn.execute(TOTALS).fetchone()


def _env(home: Path, shared: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SESSIONLAKE_SESSIONS_DIR", "SESSIONLAKE_STORAGE_URI", "SESSIONLAKE_TEAM_URI", "DAGSTER_HOME")}
    return {**env, "HOME": str(home), "SESSIONLAKE_HOME": str(home / ".sessionlake"), "SESSIONLAKE_AGENTS": "claude",
            "SESSIONLAKE_SYNC_URI": str(shared), "SESSIONLAKE_MACHINE": home.name, "SESSIONLAKE_USER": "bench",
            "TZ": "UTC", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _sync_round(homes: list[Path], shared: Path) -> tuple[list, list[dict]]:
    measured, reports = [], []
    for home in homes:
        done = run_measured([sys.executable, "-m", "pipelines.cli.main", "sync", "--json"], _env(home, shared))
        if done.returncode != 0:
            raise AssertionError(f"sync on {home.name} exited {done.returncode}: {done.stderr[-2000:]}")
        measured.append(done)
        reports.append(json.loads(done.stdout))
    return measured, reports


def _plain_copy(homes: list[Path], plain: Path) -> list:
    """Each machine exports its pushed rows as Parquet, then reads every other machine's file."""
    from resources.state.store import StateStore

    plain.mkdir()
    measured = []
    for home in homes:
        with StateStore(home / ".sessionlake" / "state.duckdb").connect() as conn:
            own = conn.execute("SELECT value FROM meta WHERE key = 'sync_id'").fetchone()[0]
        out = plain / f"{home.name}.parquet"
        done = run_measured([sys.executable, "-c", _EXPORT, str(home / ".sessionlake" / "state.duckdb"), str(out),
                             f"{home.name}/{own}"], _env(home, plain))
        if done.returncode != 0:
            raise AssertionError(f"plain export failed: {done.stderr[-2000:]}")
        measured.append(done)
    for home in homes:
        others = [str(p) for p in sorted(plain.glob("*.parquet")) if p.stem != home.name]
        done = run_measured([sys.executable, "-c", _IMPORT, str(home / "plain.duckdb"), *others], _env(home, plain))
        if done.returncode != 0:
            raise AssertionError(f"plain import failed: {done.stderr[-2000:]}")
        measured.append(done)
    return measured


_MEMORY = """
import sys
from pathlib import Path
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from resources.state.store import StateStore
work = Path(sys.argv[2])
memory = MemoryProcessor(LanceStore(work / "lance"))
print(run_processors([memory], Path(sys.argv[1]), StateStore(work / "state.duckdb"))["memory"]["items_extracted"])
"""


def _transcripts(homes: list[Path], shared: Path, work: Path) -> list[dict]:
    """box1 takes in box0's transcripts (see the module doc), against the memory processor over box0's tree."""
    def with_transcripts(home: Path):
        done = run_measured([sys.executable, "-m", "pipelines.cli.main", "sync", "--with-transcripts", "--json"],
                            _env(home, shared))
        if done.returncode != 0:
            raise AssertionError(f"sync --with-transcripts on {home.name} exited {done.returncode}: "
                                 f"{done.stderr[-2000:]}")
        return done, json.loads(done.stdout)["transcripts"]

    with_transcripts(homes[1])
    with_transcripts(homes[0])
    took, report = with_transcripts(homes[1])
    got = report["received"]
    floor = run_measured([sys.executable, "-c", _MEMORY, str(homes[0] / ".claude" / "projects"),
                          str(work / "floor")], _env(homes[0], shared))
    if floor.returncode != 0:
        raise AssertionError(f"memory floor failed: {floor.stderr[-2000:]}")
    records = int(floor.stdout.strip())
    files = sum(1 for _ in (homes[0] / ".claude" / "projects").rglob("*.jsonl"))
    return [
        {"metric": "transcripts: box1 takes in box0's, CPU / memory over box0's tree in place",
         "value": round(took.cpu_sec, 2), "unit": "s",
         "baseline": round(floor.cpu_sec, 2), "ratio": round(took.cpu_sec / floor.cpu_sec, 2)},
        {"metric": "  the same, wall", "value": round(took.elapsed_sec, 2), "unit": "s",
         "baseline": round(floor.elapsed_sec, 2), "ratio": round(took.elapsed_sec / floor.elapsed_sec, 2)},
        {"metric": "  session versions taken in / box0's session files", "value": got["versions"], "unit": "files",
         "baseline": files, "ok": got["versions"] >= files},
        {"metric": "  memory records taken in / extracted in place", "value": got["records"], "unit": "records",
         "baseline": records, "ok": got["records"] == records},
        {"metric": "  bytes taken in (packs)", "value": got["bytes_received"], "unit": "bytes"},
    ]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(work: Path, sessions: int) -> list[dict]:
    homes = _machines(work, sessions)
    union = work / "union" / ".claude" / "projects"
    for home in homes:
        shutil.copytree(home / ".claude" / "projects", union, dirs_exist_ok=True)
    for home in homes:
        _ingest(home / ".claude" / "projects", home / ".sessionlake" / "state.duckdb")
    _ingest(union, work / "union.duckdb")
    expected = _totals(work / "union.duckdb")
    shared = work / "shared"
    shared.mkdir()

    rounds = [_sync_round(homes, shared) for _ in range(3)]
    plain = _plain_copy(homes, work / "plain")
    sync_sec = sum(m.elapsed_sec for measured, _ in rounds[:2] for m in measured)
    plain_sec = sum(m.elapsed_sec for m in plain)
    sync_bytes, plain_bytes = _folder_bytes(shared), _folder_bytes(work / "plain")  # before any transcripts
    pushed = sum(r["pushed_rows"] for _, reports in rounds for r in reports)
    equal = all(_totals(home / ".sessionlake" / "state.duckdb") == expected for home in homes)

    last = _env(homes[-1], shared)
    ours = run_measured([sys.executable, "-m", "pipelines.cli.main", "usage", "daily", "--json"], last)
    ours_total = json.loads(ours.stdout)["totals"]["totalTokens"]
    rows = [
        {"metric": "machines x sessions", "value": f"{MACHINES} x {sessions}", "unit": "",
         "target": f"{SHARED_FRACTION:.0%} of box0's sessions also on box1"},
        {"metric": "responses in the union (one ingest of every tree)", "value": expected[0], "unit": "responses"},
        {"metric": "responses pushed, all machines, 3 rounds", "value": pushed, "unit": "responses",
         "baseline": expected[0], "ratio": round(pushed / expected[0], 3), "target": "1.0: each response once",
         "ok": pushed == expected[0]},
        {"metric": "every warehouse equals the union ingest", "value": equal, "unit": "", "target": True, "ok": equal},
        {"metric": "sync time, rounds 1 + 2, all machines / plain Parquet export + import", "value": round(sync_sec, 2),
         "unit": "s", "baseline": round(plain_sec, 2), "ratio": round(sync_sec / plain_sec, 2)},
        {"metric": "  round 1 per machine (push + pull earlier ones), median",
         "value": round(statistics.median(m.elapsed_sec for m in rounds[0][0]), 2), "unit": "s"},
        {"metric": "  round 2 per machine (pull the later ones), median",
         "value": round(statistics.median(m.elapsed_sec for m in rounds[1][0]), 2), "unit": "s"},
        {"metric": "  round 3 per machine (nothing new), median",
         "value": round(statistics.median(m.elapsed_sec for m in rounds[2][0]), 2), "unit": "s"},
        {"metric": "sync peak RSS / plain copy peak RSS", "unit": "MB",
         "value": round(max(m.peak_tree_rss for measured, _ in rounds for m in measured) / 1e6, 1),
         "baseline": round(max(m.peak_tree_rss for m in plain) / 1e6, 1)},
        {"metric": "bytes in the sync folder / plain Parquet of the same rows", "value": sync_bytes, "unit": "bytes",
         "baseline": plain_bytes, "ratio": round(sync_bytes / plain_bytes, 3)},
        {"metric": "merged report totalTokens equals the union ingest", "value": ours_total,
         "unit": "tokens", "baseline": sum(expected[1:]), "ok": ours_total == sum(expected[1:])},
    ]
    rows += _transcripts(homes, shared, work)
    launcher, why = ccusage_launcher()
    if launcher is None:
        print(f"bench sync: ccusage skipped: {why}", file=sys.stderr)
        return rows
    peer_env = {**_env(work / "union", shared), "CLAUDE_CONFIG_DIR": str(work / "union" / ".claude")}
    peer = run_measured([launcher, "daily", "--json", "--offline"], peer_env)
    peer_total = json.loads(peer.stdout)["totals"]["totalTokens"] if peer.returncode == 0 else None
    rows += [
        {"metric": "usage daily --json on the merged warehouse / ccusage daily --json over the union",
         "value": round(ours.elapsed_sec, 3), "unit": "s", "baseline": round(peer.elapsed_sec, 3),
         "ratio": round(ours.elapsed_sec / peer.elapsed_sec, 3)},
        {"metric": "  totalTokens: sessionlake / ccusage", "value": ours_total, "unit": "tokens",
         "baseline": peer_total},
    ]
    return rows
