"""The index policy of the Lance tables: `refresh_indexes`, which ``LanceStore.refresh_indexes`` calls.

The first records upsert creates the full-text index on ``records.text`` and the id index. After
that a write never rebuilds an index: once ``INDEX_DELTA_ROWS`` rows are outside it, they are
indexed as a new segment (bytes in proportion to those rows, not to the table); maintenance indexes
every row left and keeps each index at two segments, base and recent, rewriting the whole index only
when the recent rows reach ``INDEX_TIER_RATIO`` of the base. Lance's FTS query scans the unindexed
rows itself (flat BM25, merged with the indexed hits, deleted rows excluded), so recall finds a
record the moment it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resources.memory.schema import (
    ID_INDEX,
    INDEX_DELTA_ROWS,
    INDEX_TIER_RATIO,
    PROVENANCE,
    RECORD_ID_INDEX,
    RECORDS,
    TEXT_INDEX,
    TEXT_INDEX_PARAMS,
)

if TYPE_CHECKING:
    from resources.memory.lance import LanceStore


def refresh_indexes(store: LanceStore, name: str, *, min_unindexed: int, tiered: bool) -> bool:
    """Apply the index policy to table ``name``; True when it committed anything.

    Creates the table's indexes if missing (once it has rows): ``records`` gets a B-tree on ``id``
    and the full-text index on ``text`` (tokenized as `TEXT_INDEX_PARAMS` says), ``provenance`` a
    B-tree on ``record_id``. Without ``tiered`` (the write path), indexes the rows outside an index
    as a new segment once there are ``min_unindexed`` of them. With ``tiered`` (maintenance), every
    index ends as at most two segments: the base and one recent segment, into which the newer
    segments and the unindexed rows (all of them for full text, from ``INDEX_DELTA_ROWS`` on for a
    B-tree) are merged, a rewrite of those rows only; once the recent rows reach
    ``INDEX_TIER_RATIO`` of the base, everything is merged into one (the only full rewrite).
    Everything goes through pylance: no lancedb import.
    """
    wanted = {RECORDS: {ID_INDEX: ("id", "BTREE", {}), TEXT_INDEX: ("text", "INVERTED", TEXT_INDEX_PARAMS)},
              PROVENANCE: {RECORD_ID_INDEX: ("record_id", "BTREE", {})}}.get(name, {})
    dataset = store.dataset(name)
    existing = [index.name for index in dataset.describe_indices()]
    changed = False
    if any(n not in existing for n in wanted) and dataset.count_rows() > 0:
        for index_name, (column, index_type, params) in wanted.items():
            if index_name not in existing:
                dataset.create_scalar_index(column, index_type, name=index_name, **params)
                changed = True
    by_merge: dict[int, list[str]] = {}
    for index_name in existing:
        merge = _segments_to_merge(dataset, index_name, max(min_unindexed, 1), tiered)
        if merge is not None:
            by_merge.setdefault(merge, []).append(index_name)
    for merge, names in by_merge.items():  # one commit per distinct merge, so usually one
        store.dataset(name).optimize.optimize_indices(index_names=names, num_indices_to_merge=merge)
    return changed or bool(by_merge)


def _segments_to_merge(dataset, index_name: str, min_unindexed: int, tiered: bool) -> int | None:
    """``num_indices_to_merge`` for `refresh_indexes`' policy (0: add a segment), or None: leave it.

    Tiered, a full-text index takes every unindexed row (a cold query pays ~43 ms for a flat BM25 scan
    of 70 rows), while a B-tree waits for ``INDEX_DELTA_ROWS`` (scanning a few unindexed ids is cheap,
    rewriting a B-tree segment costs tens of KB).
    """
    stats = dataset.stats.index_stats(index_name)
    unindexed = int(stats.get("num_unindexed_rows") or 0)
    segments = list(stats.get("num_indexed_rows_per_delta") or [])
    if not tiered:
        return 0 if unindexed >= min_unindexed else None
    if stats.get("index_type") != "Inverted":
        min_unindexed = max(min_unindexed, INDEX_DELTA_ROWS)
    if unindexed < min_unindexed and len(segments) <= 2:
        return None
    if segments and sum(segments[1:]) + unindexed >= INDEX_TIER_RATIO * segments[0]:
        return len(segments)
    return max(len(segments) - 1, 0)
