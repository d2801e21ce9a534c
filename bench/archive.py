"""Archive benchmark (issue 6): archive size vs raw bytes, GC throughput vs a plain copy, restore
throughput vs a plain copy, and GC peak memory vs the largest single object.

The 2,000-session corpus is ingested once, then three sessions grow over four more ingests (five in
all; each growth appends the lines of other sessions, a few MB). GC then consolidates the projects
that gained packs. Run: ``python -m bench archive`` (``--quick`` for 200 sessions).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.corpus import generate_corpus

ARCHIVE_TARGET_FRACTION = 0.25
GC_MEMORY_TARGET_RATIO = 2.0
GROWING_SESSIONS = 3
INGESTS = 5


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jsonl"))


def _store(home: Path):
    from resources.archive.packs import PackStore
    from resources.state.store import StateStore

    return PackStore(home / "packs", StateStore(home / "state.duckdb"))


def _ingest(store, root: Path) -> float:
    from resources.ingest.processors.archive import ArchiveProcessor
    from resources.ingest.runner import run_processors

    started = time.perf_counter()
    stats = run_processors([ArchiveProcessor(store)], root, store.state)["archive"]
    if stats["errors"]:
        raise AssertionError(f"archive ingest failed on {stats['error_files']}")
    return time.perf_counter() - started


def _grow(files: list[Path], donors: list[Path], per_append: int, round_no: int) -> int:
    """Append the lines of ``per_append`` donor sessions to each growing file; returns bytes added."""
    added = 0
    for i, path in enumerate(files):
        start = (round_no * len(files) + i) * per_append
        data = b"".join(d.read_bytes() for d in donors[start : start + per_append])
        with open(path, "ab") as f:
            f.write(data)
        added += len(data)
    return added


def _copy_files(paths: list[Path], dest: Path) -> float:
    dest.mkdir(parents=True)
    started = time.perf_counter()
    for p in paths:
        shutil.copyfile(p, dest / p.name)
    return time.perf_counter() - started


def _rewrite_packs(store, repos: list[str], dest: Path) -> float:
    """Seconds to verify and stream the live packs of ``repos`` into one pack each, as GC does
    between its two DuckDB steps (no index reads, no swap transaction)."""
    from resources.archive.pack_format import ObjectRef, pack_path, scan_pack_file, write_pack

    groups = {r: [p["key"] for p in store.live_packs(r)] for r in repos}
    started = time.perf_counter()
    for keys in groups.values():
        files, refs, snapshots = [], {}, []
        try:
            for key in keys:
                path = pack_path(store.packs_dir, key)
                files.append(open(path, "rb"))  # noqa: SIM115 - closed below
                listing = scan_pack_file(files[-1], path, key)
                refs.update((e.object_id, ObjectRef(e, files[-1])) for e in listing.objects)
                snapshots += listing.snapshots
            snapshots.sort(key=lambda s: s.sort_key())
            write_pack(dest, (refs[i] for i in sorted(refs)), len(refs), snapshots, len(snapshots))
        finally:
            for f in files:
                f.close()
    return time.perf_counter() - started


def _gc_peak_memory(home: Path, repos: list[str]) -> int:
    """Largest tracemalloc peak (bytes above the start) of one gc_repo call."""
    store = _store(home)
    tracemalloc.start()
    peak = 0
    try:
        for repo in repos:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            store.gc_repo(repo)
            peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    return peak


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jsonl"))}


def run(quick: bool = False) -> list[dict]:
    sessions, per_append = (200, 10) if quick else (2000, 40)
    with tempfile.TemporaryDirectory(prefix="sessionlake-bench-archive-") as tmp:
        tmp = Path(tmp)
        root, home = tmp / "projects", tmp / "home"
        corpus = generate_corpus(root, sessions=sessions)
        all_files = sorted(root.rglob("*.jsonl"))
        projects = sorted({p.parent.name for p in all_files})
        growing = [next(p for p in all_files if p.parent.name == proj) for proj in projects[:GROWING_SESSIONS]]
        donors = [p for p in all_files if p not in growing]
        store = _store(home)

        first_ingest = _ingest(store, root)
        for round_no in range(INGESTS - 1):
            _grow(growing, donors, per_append, round_no)
            _ingest(store, root)
        raw = _tree_bytes(root)
        stats = {r: store.repo_stats(r) for r in store.repos()}
        archive_bytes = sum(s["pack_bytes"] for s in stats.values())
        version_bytes = sum(s["version_bytes"] for s in stats.values())
        to_gc = sorted(r for r, s in stats.items() if s["live_packs"] > 1)
        gc_bytes = sum(stats[r]["pack_bytes"] for r in to_gc)
        with store.state.connect() as conn:
            largest_raw, largest_stored = conn.execute(
                "SELECT max(size), max(stored_size) FROM pack_index").fetchall()[0]

        shutil.copytree(home, tmp / "home-memory")  # the same archive, for the traced GC run
        gc_packs = [store.packs_dir / f"{p['key'].split(':')[1]}.mpack" for r in to_gc for p in store.live_packs(r)]
        copy_sec = _copy_files(gc_packs, tmp / "plain-copy")
        rewrite_sec = _rewrite_packs(store, to_gc, tmp / "rewrite")
        started = time.perf_counter()
        results = [store.gc_repo(r) for r in to_gc]
        gc_sec = time.perf_counter() - started
        if any(r["packs_after"] != 1 for r in results) or not store.verify()["ok"]:
            raise AssertionError(f"GC did not leave one verified pack per project: {results}")
        peak = _gc_peak_memory(tmp / "home-memory", to_gc)

        originals = _digests(root)
        started = time.perf_counter()
        shutil.copytree(root, tmp / "tree-copy")
        tree_copy_sec = time.perf_counter() - started
        out = tmp / "restored"
        started = time.perf_counter()
        for repo in store.repos():
            store.restore(repo, out)
        restore_sec = time.perf_counter() - started
        if _digests(out) != originals:
            raise AssertionError("restored tree differs from the originals")

    mb = raw / 1e6
    gc_rate, copy_rate = gc_bytes / 1e6 / gc_sec, gc_bytes / 1e6 / copy_sec
    restore_rate, tree_rate = mb / restore_sec, mb / tree_copy_sec
    fraction = archive_bytes / raw
    return [
        {"metric": f"corpus: {corpus['files']} sessions, {GROWING_SESSIONS} growing over {INGESTS} ingests",
         "value": mb, "unit": "MB"},
        {"metric": "all archived versions, uncompressed", "value": version_bytes / 1e6, "unit": "MB"},
        {"metric": "first archive ingest throughput", "value": corpus["bytes"] / 1e6 / first_ingest, "unit": "MB/s"},
        {"metric": "archive bytes / raw bytes (before GC)", "value": fraction, "unit": "fraction",
         "baseline": raw, "ratio": fraction, "target": f"<= {ARCHIVE_TARGET_FRACTION}",
         "ok": fraction <= ARCHIVE_TARGET_FRACTION},
        {"metric": f"GC throughput ({len(to_gc)} projects, {gc_bytes / 1e6:.1f} MB of packs)", "value": gc_rate,
         "unit": "MB/s", "baseline": copy_rate, "ratio": gc_rate / copy_rate,
         "target": "floor: plain copy of the same packs"},
        {"metric": "  of which pack verify + rewrite (GC without its 2 DuckDB steps)",
         "value": gc_bytes / 1e6 / rewrite_sec, "unit": "MB/s", "baseline": copy_rate,
         "ratio": gc_bytes / 1e6 / rewrite_sec / copy_rate},
        {"metric": "GC fixed cost per project (DuckDB opens, swap transaction, fsyncs)",
         "value": (gc_sec - rewrite_sec) / len(to_gc) * 1000, "unit": "ms"},
        {"metric": "restore throughput (every session, hash-checked)", "value": restore_rate, "unit": "MB/s",
         "baseline": tree_rate, "ratio": restore_rate / tree_rate, "target": "floor: plain copy of the tree"},
        {"metric": "GC peak memory (tracemalloc) / largest object", "value": peak / 1e6, "unit": "MB",
         "baseline": largest_raw / 1e6, "ratio": peak / largest_raw,
         "target": f"< {GC_MEMORY_TARGET_RATIO}x largest object", "ok": peak < GC_MEMORY_TARGET_RATIO * largest_raw},
        {"metric": "largest object stored (compressed)", "value": largest_stored / 1e6, "unit": "MB"},
        {"metric": "GC peak memory / archive bytes GC'd", "value": peak / gc_bytes, "unit": "fraction"},
    ]
