"""Team benchmark (issue 13): 20 machines x 200 sessions push to a loopback S3 API server (moto), then
the central deployment ingests what they pushed.

Each machine is a data home with its own tree: 150 sessions of its own and 50 of a project it shares
with one other machine (the same files, synced), so two machines push one identical pack each. Each
tree is archived first (not timed), then measured, every step a child process (`bench.proc`):
- push: ``sessionlake push`` on each machine, one after the other, against a plain upload of the same
  pack files (``put_object``, no condition, one client, also one process per machine);
- central ingest: the ingest_team run's work (`ingest_manifests`: packs verified, adopted, usage and
  memory over their bytes, Lance in the bucket) against the same processors over the union of the
  trees on local disk (Lance on local disk), as one local ingest would run them;
- bytes stored in the bucket's packs against the raw bytes of all trees (and of the unique files);
- peak memory: the largest process-tree RSS of a push and of each ingest.
Run: ``python -m bench team`` (``--quick``: 4 machines x 40 sessions).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.corpus import generate_corpus
from bench.proc import run_measured

SHARED_FRACTION = 0.25
PUSH_RATIO_TARGET = 0.5
"""Push throughput at least half a plain upload of the same bytes."""
INGEST_RATIO_TARGET = 2.0
"""The central ingest at most twice the time of the same ingest from a local tree."""

_PLAIN_UPLOAD = r"""
import sys
from pathlib import Path
from resources.objectstore.location import StorageLocation
blobs = StorageLocation.parse(sys.argv[1]).blobs()
for path in sorted(Path(sys.argv[2]).glob("*.mpack")):
    with open(path, "rb") as f:
        blobs.client.put_object(Bucket=blobs.location.bucket, Key=blobs.key(path.name), Body=f)
"""

_CENTRAL = r"""
import json, sys
from resources.ingest.processors.memory import MemoryProcessor
from resources.team.ingest import ingest_manifests
from resources.ingest.processors.usage import UsageProcessor
from resources.archive.packs import PackStore
from resources.memory.lance import LanceStore
from resources.config.settings import Settings
from resources.team.manifests import list_manifest_names, read_manifest
settings = Settings.from_env()
bucket = settings.team.blobs()
manifests = [read_manifest(bucket, n) for n in list_manifest_names(bucket)]
result = ingest_manifests(manifests, [UsageProcessor(), MemoryProcessor(LanceStore.from_settings(settings))],
                          PackStore.from_settings(settings))
print(json.dumps({"team": result["team"], "errors": result["usage"]["errors"] + result["memory"]["errors"]}))
"""

_LOCAL = r"""
import json, sys
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.runner import run_processors
from resources.ingest.processors.usage import UsageProcessor
from resources.memory.lance import LanceStore
from resources.config.settings import Settings
from resources.state.store import StateStore
settings = Settings.from_env()
stats = run_processors([UsageProcessor(), MemoryProcessor(LanceStore.from_settings(settings))],
                       settings.sessions_dir, StateStore.from_settings(settings))
print(json.dumps({"errors": stats["usage"]["errors"] + stats["memory"]["errors"]}))
"""

_TOTALS = ("SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), "
           "sum(cache_read_tokens) FROM usage_messages")


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jsonl"))


def _machines(work: Path, machines: int, sessions: int) -> list[Path]:
    """Trees of ``machines`` machines; machine 2k and 2k+1 share one project (the same files)."""
    shared_n = int(sessions * SHARED_FRACTION)
    shared: dict[int, Path] = {}
    for pair in range(machines // 2):
        shared[pair] = work / f"shared-{pair}"
        generate_corpus(shared[pair], sessions=shared_n, projects=1, seed=10_000 + pair)
        src = shared[pair] / "-home-dev-project-000"
        src.rename(shared[pair] / f"-home-team-shared-{pair:02d}")
    trees = []
    for m in range(machines):
        tree = work / f"machine-{m:02d}" / "projects"
        generate_corpus(tree, sessions=sessions - shared_n, projects=3, seed=m)
        if m // 2 in shared:
            shutil.copytree(shared[m // 2], tree, dirs_exist_ok=True)  # copy2: same bytes, same mtimes
        trees.append(tree)
    return trees


def _archive(home: Path, tree: Path) -> None:
    from resources.archive.packs import PackStore
    from resources.ingest.processors.archive import ArchiveProcessor
    from resources.ingest.runner import run_processors
    from resources.state.store import StateStore

    store = PackStore(home / "packs", StateStore(home / "state.duckdb"))
    stats = run_processors([ArchiveProcessor(store)], tree, store.state)["archive"]
    if stats["errors"]:
        raise AssertionError(f"archive failed on {stats['error_files']}")


def _totals(state_path: Path) -> tuple:
    from resources.state.store import StateStore

    with StateStore(state_path).connect() as conn:
        return conn.execute(_TOTALS).fetchone()


def run(quick: bool = False) -> list[dict]:
    from tests.s3_support import S3Server

    machines, sessions = (4, 40) if quick else (20, 200)
    server = S3Server().start()
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    try:
        return _run(server, work, machines, sessions)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _run(server, work: Path, machines: int, sessions: int) -> list[dict]:
    import os

    team = server.location(server.new_bucket("team"), "org")
    plain = server.location(server.new_bucket("plain"), "org")
    env = {**os.environ, **server.env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    trees = _machines(work, machines, sessions)
    raw = sum(_tree_bytes(t) for t in trees)
    union = work / "union"
    for tree in trees:
        shutil.copytree(tree, union, dirs_exist_ok=True)
    unique = _tree_bytes(union)
    homes = [t.parent / "home" for t in trees]
    for home, tree in zip(homes, trees, strict=True):
        _archive(home, tree)
    local_pack_bytes = sum(p.stat().st_size for h in homes for p in (h / "packs").glob("*.mpack"))

    push_sec = push_peak = plain_sec = plain_peak = 0.0
    for m, home in enumerate(homes):
        pushed = run_measured([sys.executable, "-m", "pipelines.cli.main", "push", "--json"],
                              {**env, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_TEAM_URI": team.uri,
                               "SESSIONLAKE_USER": f"user{m // 2:02d}", "SESSIONLAKE_MACHINE": f"box{m:02d}"})
        if pushed.returncode != 0:
            raise AssertionError(f"push failed: {pushed.stderr[-2000:]}")
        uploaded = run_measured([sys.executable, "-c", _PLAIN_UPLOAD, f"{plain.uri}/m{m:02d}", str(home / "packs")],
                                env)
        if uploaded.returncode != 0:
            raise AssertionError(f"plain upload failed: {uploaded.stderr[-2000:]}")
        push_sec += pushed.elapsed_sec
        plain_sec += uploaded.elapsed_sec
        push_peak = max(push_peak, pushed.peak_tree_rss)
        plain_peak = max(plain_peak, uploaded.peak_tree_rss)
    stored = sum(b.size for b in team.child("packs").blobs().list())

    central_home, local_home = work / "central", work / "local"
    central = run_measured([sys.executable, "-c", _CENTRAL],
                           {**env, "SESSIONLAKE_HOME": str(central_home), "SESSIONLAKE_TEAM_URI": team.uri,
                            "SESSIONLAKE_STORAGE_URI": team.uri})
    local = run_measured([sys.executable, "-c", _LOCAL],
                         {**env, "SESSIONLAKE_HOME": str(local_home), "SESSIONLAKE_SESSIONS_DIR": str(union)})
    for name, measured in (("central", central), ("local", local)):
        if measured.returncode != 0 or json.loads(measured.stdout.strip().splitlines()[-1])["errors"]:
            raise AssertionError(f"{name} ingest failed: {measured.stderr[-2000:]}")
    same = _totals(central_home / "state.duckdb") == _totals(local_home / "state.duckdb")
    mb = 1 << 20
    return [
        {"metric": "machines x sessions", "value": f"{machines} x {sessions}", "unit": ""},
        {"metric": "raw session bytes (all machines)", "value": raw, "unit": "bytes"},
        {"metric": "push throughput (pack bytes / time, all machines)", "value": round(local_pack_bytes / mb
         / push_sec, 2), "unit": "MB/s", "baseline": round(local_pack_bytes / mb / plain_sec, 2),
         "ratio": round(plain_sec / push_sec, 3), "target": f">= {PUSH_RATIO_TARGET}",
         "ok": plain_sec / push_sec >= PUSH_RATIO_TARGET},
        {"metric": "push wall time (sum of the machines) / plain upload", "value": round(push_sec, 2), "unit": "s",
         "baseline": round(plain_sec, 2)},
        {"metric": "central ingest (bucket) / local ingest of the union tree", "value": round(central.elapsed_sec, 2),
         "unit": "s", "baseline": round(local.elapsed_sec, 2), "ratio": round(central.elapsed_sec / local.elapsed_sec,
                                                                                3),
         "target": f"<= {INGEST_RATIO_TARGET}", "ok": central.elapsed_sec / local.elapsed_sec <= INGEST_RATIO_TARGET},
        {"metric": "central ingest CPU / local ingest CPU", "value": round(central.cpu_sec, 2), "unit": "s",
         "baseline": round(local.cpu_sec, 2), "ratio": round(central.cpu_sec / local.cpu_sec, 3)},
        {"metric": "central totals equal local totals", "value": same, "unit": "", "target": True, "ok": same},
        {"metric": "bytes stored in the bucket / raw bytes", "value": stored, "unit": "bytes", "baseline": raw,
         "ratio": round(stored / raw, 3)},
        {"metric": "bytes stored / packs on the machines (dedup across machines)", "value": stored, "unit": "bytes",
         "baseline": local_pack_bytes, "ratio": round(stored / local_pack_bytes, 3)},
        {"metric": "unique session bytes / raw bytes", "value": unique, "unit": "bytes", "baseline": raw,
         "ratio": round(unique / raw, 3)},
        {"metric": "peak RSS of one push / one plain upload", "value": round(push_peak / mb, 1), "unit": "MB",
         "baseline": round(plain_peak / mb, 1)},
        {"metric": "peak RSS of the central / the local ingest", "value": round(central.peak_tree_rss / mb, 1),
         "unit": "MB", "baseline": round(local.peak_tree_rss / mb, 1)},
    ]
