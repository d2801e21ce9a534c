"""Lance storage health: measure the tables, compact them, prune old versions, report.

Contract:
- `measure_table(store, name)` is cheap (no manifest is read beyond the latest): versions are the
  ``*.manifest`` files under ``<table>.lance/_versions/``, bytes are everything in the table folder
  (manifests included, which is where un-pruned history lives), fragments and rows come from
  ``Table.stats()``. The sensor, the asset checks and the helper all use it.
- `optimize_lance_storage(store, retention, phase)` compacts data files (size-tiered, see
  `compaction_exclusions`: a run rewrites the young fragments, not the whole table), applies the index policy and
  removes versions older than ``retention`` for every table of ``TABLE_NAMES`` (``records``,
  ``edges``, ``events``, ``provenance``), in that order of steps (so the index and compaction commits
  are pruned in the same call). The index step is ``LanceStore.refresh_indexes(tiered=True)``: missing
  indexes are created and every unindexed row is indexed, each index kept at a base and a recent
  segment, rewritten whole only once the recent rows reach ``INDEX_TIER_RATIO`` of the base. It
  returns ``{table: entry}`` for exactly those tables and never raises for a table's failure: the
  entry gets ``error`` and the other tables are still processed. It writes one
  ``lance_storage_optimized`` event per call.
- A commit conflict with a concurrent writer is retried with backoff on a freshly opened dataset; only
  if it persists does the entry get an ``error`` (the next run tries again). Nothing is ever deleted
  that a live commit may still need: ``delete_unverified`` stays False, and tagged versions are kept
  instead of failing the prune.
- How often to optimize and how long to keep versions are settings (``lance_optimize_interval_sec``,
  ``lance_optimize_retention_sec`` in `resources.config.settings.Settings`); callers pass them in.

Measured on lancedb 0.40.0 / pylance 14 (what this design relies on): sync ``Table.optimize()`` returns
None and its prune raises on a tagged old version, after which the index step is skipped; the pylance
steps used here return stats and ``cleanup_old_versions(error_if_tagged_old_versions=False)`` skips
tagged versions. A handle opened before another writer committed makes optimize a no-op, so every step
opens the table again. ``Table.stats()`` bytes leave out manifests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from resources.memory.conflicts import is_commit_conflict
from resources.memory.events import write_event
from resources.memory.schema import EVENTS, TABLE_NAMES

log = logging.getLogger(__name__)


PHASES = ("startup", "periodic", "threshold", "manual")
OPTIMIZED_EVENT = "lance_storage_optimized"
SKIPPED_EVENT = "lance_storage_optimize_skipped"
MEASURES = ("rows", "versions", "size_bytes", "fragments", "small_fragments")
"""Each report entry holds ``<measure>_before`` and ``<measure>_after`` for these."""

COMPACTION_TIER_RATIO = 4
"""Compaction leaves a fragment alone while it holds this many times the rows of all newer fragments
together (see `compaction_exclusions`)."""
DELETED_SHARE_TO_REWRITE = 0.1
"""A fragment with this share of its rows deleted is always compacted (Lance's own default threshold)."""

CONFLICT_ATTEMPTS = 6
CONFLICT_BASE_DELAY_SEC = 0.1


class RetentionBelowFloor(ValueError):
    """A retention shorter than the floor was asked for without ``force``."""


def check_retention(retention_sec: float, floor_sec: float, force: bool = False) -> None:
    """Raise `RetentionBelowFloor` if ``retention_sec`` is under ``floor_sec`` and not forced.

    A short retention deletes files that other processes' open handles, or a commit being prepared,
    still read; the floor keeps scheduled runs clear of that. Negative retention is always refused.
    """
    if retention_sec < 0:
        raise RetentionBelowFloor(f"retention must be >= 0 seconds, got {retention_sec}")
    if retention_sec < floor_sec and not force:
        raise RetentionBelowFloor(
            f"retention {retention_sec:g}s is below the floor of {floor_sec:g}s "
            "(SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC); pass force to run it anyway, only when no other "
            "process uses the Lance tables"
        )


@dataclass(frozen=True)
class TableHealth:
    """One table's storage shape at one moment."""

    name: str
    rows: int
    versions: int
    size_bytes: int
    fragments: int
    small_fragments: int
    prunable_versions: int | None = None
    """Versions old enough for the retention to remove (never the latest); None when not asked for."""


def table_dir(store, name: str) -> Path:
    return store.table_path(name)


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path``; files a concurrent prune removes mid-walk are skipped."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:  # removed by a concurrent prune while we walked
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


def _bucket_files(store, name: str, sub: str = ""):
    """The objects of table ``name`` (under ``sub``) in a bucket: name, size, modified time."""
    return store.blobs().list(f"{name}.lance/" + (f"{sub}/" if sub else ""))


def count_versions(store, name: str) -> int:
    """Manifests on disk (one per retained version), counted without reading any of them."""
    if store.location is not None:
        return sum(1 for b in _bucket_files(store, name, "_versions") if b.name.endswith(".manifest"))
    versions = table_dir(store, name) / "_versions"
    try:
        return sum(1 for e in os.scandir(versions) if e.name.endswith(".manifest"))
    except FileNotFoundError:
        return 0


def count_prunable_versions(store, name: str, retention_sec: float) -> int:
    """Manifests older than ``retention_sec`` by file time, minus the latest version (never pruned)."""
    cutoff = time.time() - retention_sec
    if store.location is not None:
        stamps = [b.modified.timestamp() for b in _bucket_files(store, name, "_versions")
                  if b.name.endswith(".manifest")]
        return max(0, min(sum(t < cutoff for t in stamps), len(stamps) - 1))
    versions_dir = table_dir(store, name) / "_versions"
    total = old = 0
    try:
        entries = list(os.scandir(versions_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.endswith(".manifest"):
            continue
        total += 1
        try:
            old += entry.stat().st_mtime < cutoff
        except FileNotFoundError:
            total -= 1
    return max(0, min(old, total - 1))


def measure_table(store, name: str, retention_sec: float | None = None) -> TableHealth:
    """Rows, versions, bytes on disk and fragments of table ``name`` (opened fresh; raises if it cannot be).

    With ``retention_sec`` it also counts the versions a prune with that retention would remove.
    """
    stats = store.open_table(name).stats()
    fragments = stats["fragment_stats"]
    return TableHealth(
        name=name,
        rows=int(stats["num_rows"]),
        versions=count_versions(store, name),
        size_bytes=(sum(b.size for b in _bucket_files(store, name)) if store.location is not None
                    else folder_bytes(table_dir(store, name))),
        fragments=int(fragments["num_fragments"]),
        small_fragments=int(fragments["num_small_fragments"]),
        prunable_versions=None if retention_sec is None else count_prunable_versions(store, name, retention_sec),
    )


def measure_store(store, retention_sec: float | None = None) -> dict[str, TableHealth | str]:
    """`measure_table` for every table; a table that cannot be measured maps to its error string."""
    out: dict[str, TableHealth | str] = {}
    for name in TABLE_NAMES:
        try:
            out[name] = measure_table(store, name, retention_sec)
        except Exception as exc:
            out[name] = _describe(exc)
    return out


def threshold_breaches(health: dict[str, TableHealth | str], versions_threshold: int,
                       small_fragments_threshold: int) -> list[str]:
    """Why the tables need an optimize now, one line per crossed threshold (empty: healthy).

    Versions count as prunable ones when measured with a retention: versions the retention keeps
    would otherwise re-trigger an optimize that cannot remove them (and adds commits) on every tick.
    """
    reasons = []
    for name, h in health.items():
        if isinstance(h, str):
            continue
        if h.prunable_versions is not None:
            if h.prunable_versions > versions_threshold:
                reasons.append(f"{name}: {h.prunable_versions} prunable versions > {versions_threshold}")
        elif h.versions > versions_threshold:
            reasons.append(f"{name}: {h.versions} versions > {versions_threshold}")
        if h.small_fragments > small_fragments_threshold:
            reasons.append(f"{name}: {h.small_fragments} small fragments > {small_fragments_threshold}")
    return reasons


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"



class CommitConflictPersisted(RuntimeError):
    """Every attempt of a step hit a commit conflict; the next maintenance run tries again."""


def _with_conflict_retry(step: str, fn: Callable[[], object], retries: list[int]):
    """Run ``fn`` (which must open the table itself); on a commit conflict wait and run it again."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_commit_conflict(exc):
                raise
            retries[0] += 1
            attempt += 1
            if attempt >= CONFLICT_ATTEMPTS:
                raise CommitConflictPersisted(
                    f"{step}: commit conflict persisted after {CONFLICT_ATTEMPTS} attempts, retry later: {exc}"
                ) from exc
            time.sleep(CONFLICT_BASE_DELAY_SEC * 2 ** (attempt - 1))


def compaction_exclusions(fragments) -> list[int]:
    """Ids of the fragments (pylance ``FragmentMetadata``, oldest first) that compaction should leave alone.

    Size-tiered, as in an LSM tree: a fragment is left alone while its rows are at least
    ``COMPACTION_TIER_RATIO`` times the rows of every newer fragment together, unless a tenth of it
    is deleted. Lance's own planner merges every fragment under its target (a million rows), so each
    run rewrote a whole append-only table to absorb a few new rows: bytes per run grew with the table.
    Tiered, a run rewrites the young tail, a fragment is rewritten about once per quadrupling of the
    rows after it, and a table keeps a few fragments per factor of four in size.
    """
    excluded, newer = [], 0
    for fragment in reversed(list(fragments)):
        physical = int(fragment.physical_rows or 0)
        deleted = int(fragment.num_deletions or 0)
        live = physical - deleted
        if newer and live >= COMPACTION_TIER_RATIO * newer and deleted < DELETED_SHARE_TO_REWRITE * physical:
            excluded.append(int(fragment.id))
        newer += live
    return sorted(excluded)


def _compact(dataset):
    excluded = compaction_exclusions(fragment.metadata for fragment in dataset.get_fragments())
    return dataset.optimize.compact_files(excluded_fragment_ids=excluded or None)


def _optimize_table(store, name: str, retention: timedelta, retries: list[int]) -> dict:
    """Compact (size-tiered, see `compaction_exclusions`), update indexes, prune; each step on a dataset
    opened right before it."""

    def dataset():
        return store.open_table(name).to_lance()

    compaction = _with_conflict_retry("compact", lambda: _compact(dataset()), retries)
    _with_conflict_retry("index", lambda: store.refresh_indexes(name, tiered=True), retries)
    prune = _with_conflict_retry("prune", lambda: dataset().cleanup_old_versions(
        older_than=retention, delete_unverified=False, error_if_tagged_old_versions=False), retries)
    return {
        "fragments_removed": int(compaction.fragments_removed),
        "fragments_added": int(compaction.fragments_added),
        "versions_removed": int(prune.old_versions),
        "bytes_removed": int(prune.bytes_removed),
    }


def _empty_entry() -> dict:
    entry = {f"{m}_{when}": None for m in MEASURES for when in ("before", "after")}
    entry.update(fragments_removed=None, fragments_added=None, versions_removed=None, bytes_removed=None,
                 conflict_retries=0, elapsed_sec=0.0)
    return entry


def optimize_table_entry(store, name: str, retention: timedelta) -> dict:
    """One table's report entry; failures land in ``error`` (naming the step), never raised."""
    started = time.perf_counter()
    entry = _empty_entry()
    retries = [0]
    step = "open"
    try:
        before = measure_table(store, name)
        entry.update({f"{m}_before": getattr(before, m) for m in MEASURES})
        step = "optimize"
        entry.update(_optimize_table(store, name, retention, retries))
        step = "measure"
        after = measure_table(store, name)
        entry.update({f"{m}_after": getattr(after, m) for m in MEASURES})
    except Exception as exc:
        entry["error"] = f"{step} {name}: {_describe(exc)}"
    entry["conflict_retries"] = retries[0]
    entry["elapsed_sec"] = round(time.perf_counter() - started, 4)
    return entry


def optimize_lance_storage(store, retention: timedelta, phase: str = "manual") -> dict:
    """Optimize every table of ``TABLE_NAMES``; return ``{table: entry}`` for exactly those.

    Each entry has ``rows``/``versions``/``size_bytes``/``fragments``/``small_fragments`` ``_before`` and
    ``_after``, the compaction and prune counts, ``conflict_retries`` and ``elapsed_sec``; a table that
    failed also has ``error`` (its unknown numbers are None). Takes any retention >= 0 (the floor is the
    caller's rule, see `check_retention`). Raises ValueError only for an unknown ``phase`` or a negative
    retention, before touching anything.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    if retention < timedelta(0):
        raise ValueError(f"retention must not be negative, got {retention}")
    started = time.perf_counter()
    report = {name: optimize_table_entry(store, name, retention) for name in TABLE_NAMES}
    total = round(time.perf_counter() - started, 4)
    failed = [name for name, entry in report.items() if "error" in entry]
    try:
        write_event(store, OPTIMIZED_EVENT, {
            "phase": phase, "retention_days": retention.total_seconds() / 86400.0,
            "retention_sec": retention.total_seconds(), "per_table": report, "total_elapsed_sec": total,
        }, severity="warning" if failed else "info")
    except Exception as exc:  # the report is the result; a broken events table is already in it
        log.warning("could not write the %s event (%s table: %s)", OPTIMIZED_EVENT, EVENTS, _describe(exc))
    return report


def format_report_table(report: dict) -> str:
    """The before/after table as Markdown (readable in a terminal and in the Dagster UI)."""
    lines = ["| table | rows | versions | size (bytes) | fragments | small fragments | sec | status |",
             "|---|---|---|---|---|---|---|---|"]

    def pair(entry, measure):
        b, a = entry.get(f"{measure}_before"), entry.get(f"{measure}_after")
        return f"{'?' if b is None else f'{b:,}'} → {'?' if a is None else f'{a:,}'}"

    for name, entry in report.items():
        status = entry["error"].replace("|", "/") if "error" in entry else "ok"
        cells = [name, *(pair(entry, m) for m in MEASURES), f"{entry['elapsed_sec']:.2f}", status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
