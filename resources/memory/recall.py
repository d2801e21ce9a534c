"""Recall: the best records for a cue, each leaving a provenance entry behind.

``recall`` ranks with the full-text index on ``records.text`` (BM25), records that contain the cue
as an exact phrase first. Rows the index does not cover yet are scanned by Lance's FTS query itself
(flat BM25 over the unindexed fragments, merged with the indexed hits), so a record is found the
moment it is written and indexed rows keep their scores. When the records table has vectors and a
cue embedding is available (given, or computed by the configured embedder) it runs a hybrid search
(vector + full text, fused by reciprocal rank: LanceDB's ``RRFReranker``). The cue is read by
`resources.memory.fts_query.parse_query`: plain words as above, phrases, prefixes and boolean terms
as LanceDB query objects (a cue it cannot parse raises `QuerySyntaxError`). ``where`` narrows the
records further (a Lance SQL filter; `resources.memory.hits.scope_filter` builds one). Each returned
record gets one provenance entry ``{ts, cue, session_id}`` through ``store.record_provenance``:
queued when the write-behind queue is on, written before returning when it is off. Hits do not carry
their provenance: reading it is a second query per recall (one for all hits,
``store.provenance_of(ids)``: 5-60 ms on a maintained table, 184 ms p50 on ``bench recall``'s 37,000
unmaintained entries, growing with the table's small fragments), and with the queue on it would miss
the queued entries; ``store.get(id)["provenance"]`` has them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from resources.memory.lance import LanceStore
from resources.memory.schema import RECORDS, VECTOR_COLUMN, sql_str
from resources.times import as_utc, utcnow

CANDIDATE_FACTOR = 3
MIN_CANDIDATES = 30
RESULT_COLUMNS = ["id", "tier", "text", "role", "session_id", "session_key", "project", "timestamp", "model",
                  "git_branch", "tags"]
_WORD = re.compile(r"\w+", re.UNICODE)


def recall_filter(project: str | Sequence[str] | None = None, since: datetime | str | None = None) -> str | None:
    """The Lance SQL filter for the optional project (one name, or any of several) and since bounds (None
    when unbounded)."""
    clauses = []
    projects = [project] if isinstance(project, str) else list(project or ())
    if projects:
        clauses.append(f"project IN ({', '.join(map(sql_str, projects))})")
    if since:
        clauses.append(f"timestamp >= TIMESTAMP {sql_str(as_utc(since).strftime('%Y-%m-%d %H:%M:%S.%f'))}")
    return " AND ".join(clauses) or None


def recall(
    store: LanceStore,
    cue: str,
    session_id: str | None,
    k: int = 10,
    project: str | Sequence[str] | None = None,
    since: datetime | str | None = None,
    cue_embedding=None,
    where: str | None = None,
) -> list[dict]:
    """Up to ``k`` records for ``cue``, best first, with ``score``; their provenance is ``store.get(id)``'s.

    ``session_id`` names who is recalling; it goes into the provenance entry appended to every hit.
    An empty cue (no word characters) returns nothing and writes nothing.
    """
    if k <= 0 or not _WORD.search(cue or ""):
        return []
    from resources.memory.fts_query import parse_query

    dataset = store.dataset(RECORDS)
    where = " AND ".join(f"({c})" for c in (recall_filter(project, since), where) if c) or None
    hybrid = VECTOR_COLUMN in dataset.schema.names and (cue_embedding is not None or store.embedding is not None)
    parsed = parse_query(cue, for_lancedb=hybrid)
    if hybrid:
        if cue_embedding is None and not parsed.plain:  # embed the words, not the operators
            cue_embedding = store.embedding.compute_query_embeddings(parsed.text)[0]
        rows = _hybrid(store.open_table(RECORDS), parsed.fts, cue_embedding, where, k)
    else:
        rows = _full_text(dataset, parsed, where, k)
    if rows:
        entry = {"ts": utcnow().isoformat(), "cue": cue, "session_id": session_id}
        store.record_provenance([(row["id"], entry) for row in rows])
    return rows


def _full_text(dataset, parsed, where: str | None, k: int) -> list[dict]:
    """BM25 through pylance's scanner: what LanceDB's full-text query runs, without importing lancedb."""
    words = [w.lower() for w in parsed.words]
    fts = {"query": parsed.fts, "columns": ["text"]} if parsed.plain else parsed.fts

    def query(limit: int) -> list[dict]:
        return dataset.to_table(columns=[*RESULT_COLUMNS, "_score"], filter=where, prefilter=bool(where),
                                full_text_query=fts, limit=limit).to_pylist()

    if len(words) == 1 or not parsed.plain:  # BM25 order is final: one word, or the query says what counts
        return [_result(h, h.get("_score")) for h in query(k)]
    hits = query(max(k * CANDIDATE_FACTOR, MIN_CANDIDATES))
    phrase = f" {' '.join(words)} "
    # exact-phrase hits first, BM25 order otherwise (sort is stable)
    hits.sort(key=lambda h: phrase not in f" {' '.join(_WORD.findall((h.get('text') or '').lower()))} ")
    return [_result(h, h.get("_score")) for h in hits[:k]]


def _hybrid(table, cue, cue_embedding, where: str | None, k: int) -> list[dict]:
    from lancedb.rerankers import RRFReranker

    if cue_embedding is not None:
        query = table.search(query_type="hybrid", vector_column_name=VECTOR_COLUMN, fts_columns="text")
        query = query.vector(list(cue_embedding)).text(cue)
    else:
        query = table.search(cue, query_type="hybrid", vector_column_name=VECTOR_COLUMN, fts_columns="text")
    query = query.select(RESULT_COLUMNS).rerank(RRFReranker())
    if where:
        query = query.where(where, prefilter=True)
    return [_result(h, h.get("_relevance_score")) for h in query.limit(k).to_list()]


def _result(hit: dict, score) -> dict:
    row = {c: hit.get(c) for c in RESULT_COLUMNS}
    row["score"] = float(score) if score is not None else None
    return row


def snippet(text: str, cue: str, width: int = 160, mark: tuple[str, str] = ("[", "]")) -> str:
    """A one-line window of ``text`` around the first cue word, every cue word wrapped in ``mark``."""
    flat = " ".join((text or "").split())
    words = {w.lower() for w in _WORD.findall(cue or "")}
    if not words:
        return flat[:width]
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\w*",
                         re.IGNORECASE)
    first = pattern.search(flat)
    start = max(0, (first.start() if first else 0) - width // 3)
    window = flat[start : start + width]
    prefix = "…" if start > 0 else ""
    suffix = "…" if start + width < len(flat) else ""
    return prefix + pattern.sub(lambda m: f"{mark[0]}{m.group(0)}{mark[1]}", window) + suffix
