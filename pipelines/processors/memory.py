"""The memory processor: every prompt and answer text becomes a Lance record, threads become edges.

- A ``user`` line whose content is a string or has ``text`` blocks (not ``tool_result``, not
  ``isMeta``) and an ``assistant`` line's ``text`` blocks become one ``records`` row (tier
  ``episodic``), id = the line's ``uuid``, else a hash of session key + byte offset.
- ``reply_to`` edges go from a record to its nearest ancestor record along ``parentUuid`` (skipping
  tool-use and tool-result lines); when the chain leaves the lines read, to the last parentUuid seen.
- A ``summary`` line tags every record of the session that holds its ``leafUuid`` (any line read in
  this run, or a stored record); when the leaf is nowhere to be found, the records of the summary's
  own file.
- A prompt or answer line whose timestamp is not ISO-8601, or whose session id, model or branch is
  not a string, is malformed: counted and kept in ``malformed_lines``; the rest of the file is used.
- Records and edges are written every `FILES_PER_COMMIT` files (one ``merge_insert`` per table per
  commit: a small run is one commit, a first ingest of a huge tree a few, in bounded memory); a grown
  file is read from its stored offset only. Summary tags span commits: a summary whose leaf comes in
  a later file waits for it, tags resolved so far apply to every later record of their session, and
  what is still unresolved when the run ends goes to the summary's own session.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.processors.contract import ProcessorResult, SessionProcessor
from resources.ids import stable_id
from resources.memory.events import write_event
from resources.memory.lance import EDGES, RECORDS, LanceStore, as_utc, new_edge, new_record, sql_str
from resources.sessions import ParseStats, iter_jsonl
from resources.state import Connection

SUMMARY_SESSIONS_PER_QUERY = 500
FILES_PER_COMMIT = 1000
"""Records of this many files are held before a commit (a run over 20,000 sessions held all of them)."""


def line_text(obj: dict) -> tuple[str, str] | None:
    """``(role, text)`` for a prompt or answer line, or None for anything else.

    Lines without ``type`` (some older writers omit it) are judged by ``message.role``.
    """
    message = obj.get("message")
    if not isinstance(message, dict) or obj.get("isMeta"):
        return None
    kind = obj.get("type", message.get("role"))
    if kind not in ("user", "assistant"):
        return None
    content = message.get("content")
    if isinstance(content, str):
        text = content if kind == "user" else ""
    elif isinstance(content, list):
        parts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        text = "\n\n".join(p for p in parts if isinstance(p, str))
    else:
        return None
    text = text.strip()
    return (kind, text) if text else None


def record_fields(obj: dict) -> dict:
    """``session_id``, ``timestamp``, ``model`` and ``git_branch`` of a prompt or answer line.

    Raises ValueError naming the field when one is present but cannot be stored (a timestamp that is
    not ISO-8601, a text field that is not a string): the line is then malformed, and only that line
    is lost, never the file or the run's commit.
    """
    values = {"session_id": obj.get("sessionId"), "timestamp": obj.get("timestamp"),
              "model": obj["message"].get("model"), "git_branch": obj.get("gitBranch") or None}
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} is not a string: {value!r}"[:200])
    try:
        values["timestamp"] = as_utc(values["timestamp"])
    except (ValueError, OverflowError):  # not ISO-8601, or beyond year 1..9999 once in UTC
        raise ValueError(f"timestamp is not an ISO-8601 time: {values['timestamp']!r}"[:200]) from None
    return values


class MemoryProcessor(SessionProcessor):
    """Batches records and edges per commit and summaries per run; ``commit`` writes each table once."""

    name = "memory"
    commit_every_files = FILES_PER_COMMIT

    def __init__(self, store: LanceStore):
        self.store = store
        self._records: dict[str, dict] = {}
        self._edges: list[dict] = []
        self._summaries: list[tuple[str | None, str, str | None]] = []
        self._pending_summaries: list[tuple[str | None, str, str | None]] = []
        self._tags: dict[str, set[str]] = {}
        self._line_sessions: dict[str, str] = {}
        self._run_line_sessions: dict[int, str] = {}
        """Session of every line of the run's committed files, by ``hash(uuid)``: summary leaves may point
        at any line, and a million uuid strings would cost hundreds of MB (sessions are interned)."""
        self._stats: dict = {}
        self._versions_before: dict[str, int] = {}

    def begin_run(self) -> None:
        self.discard()
        self._pending_summaries, self._tags, self._run_line_sessions = [], {}, {}
        self._stats = {"records_written": 0, "edges_written": 0, "summaries_attached": 0, "commits": 0}
        self._versions_before = {t: self.store.version(t) for t in (RECORDS, EDGES)}

    def process_session(
        self,
        session_path: Path,
        username: str,
        session_key: str,
        conn: Connection,
        *,
        start_offset: int = 0,
    ) -> ProcessorResult:
        stats = ParseStats()
        records: list[dict] = []
        parents: dict[str, str | None] = {}
        record_ids: set[str] = set()
        links: list[tuple[str, str]] = []
        summaries: list[tuple[str | None, str]] = []
        file_session: str | None = None
        line_sessions: dict[str, str] = {}
        for line in iter_jsonl(session_path, start_offset, stats):
            obj = line.obj
            if obj.get("type") == "summary":
                if isinstance(obj.get("summary"), str) and obj["summary"].strip():
                    summaries.append((obj.get("leafUuid"), obj["summary"].strip()))
                continue
            uuid = obj.get("uuid") if isinstance(obj.get("uuid"), str) else None
            parent = obj.get("parentUuid") if isinstance(obj.get("parentUuid"), str) else None
            session_id = obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else None
            if uuid:
                parents[uuid] = parent
                if session_id:
                    line_sessions[uuid] = sys.intern(session_id)
            file_session = file_session or session_id
            found = line_text(obj)
            if found is None:
                continue
            role, text = found
            try:
                fields = record_fields(obj)
            except ValueError as exc:
                stats.reject(line, str(exc))
                continue
            record_id = uuid or stable_id(session_key, line.offset)
            records.append(new_record(record_id, text, tier="episodic", role=role, session_key=session_key,
                                      project=username, **fields))
            record_ids.add(record_id)
            if parent:
                links.append((record_id, parent))
        edges = [new_edge(src, _nearest_record(parent, parents, record_ids), "reply_to") for src, parent in links]
        self._records.update((r["id"], r) for r in records)
        self._edges.extend(edges)
        self._summaries.extend((leaf, text, file_session) for leaf, text in summaries)
        self._line_sessions.update(line_sessions)
        return ProcessorResult(items_count=len(records), end_offset=stats.end_offset, bytes_read=stats.bytes_read,
                               malformed=stats.malformed)

    def commit(self, conn: Connection) -> None:
        self._run_line_sessions.update((hash(uuid), session) for uuid, session in self._line_sessions.items())
        self._pending_summaries.extend(self._summaries)
        records = list(self._records.values())
        tagged = self._attach_summaries(records, final=False)
        self._write(records + tagged, self._edges)
        self.discard()

    def discard(self) -> None:
        """Forget the batch (its files are read again); summary state of committed files stays."""
        self._records, self._edges, self._summaries, self._line_sessions = {}, [], [], {}

    def _write(self, records: list[dict], edges: list[dict]) -> None:
        self._stats["records_written"] += self.store.upsert_records(records)
        self._stats["edges_written"] += self.store.upsert_edges(edges)
        self._stats["commits"] += 1

    def end_run(self) -> dict:
        if self._pending_summaries:  # leaves found nowhere in the run or the store: their own session
            self._write(self._attach_summaries([], final=True), [])
        stats = dict(self._stats)
        for table in (RECORDS, EDGES):
            version = self.store.version(table)
            stats[f"lance_version_{table}"] = version
            stats[f"lance_versions_added_{table}"] = version - self._versions_before.get(table, version)
        if stats.get("commits"):
            write_event(self.store, "memory_ingest", stats)
        return stats

    def _attach_summaries(self, records: list[dict], final: bool) -> list[dict]:
        """Resolve what pending summaries can be, tag ``records`` (this commit's) with every tag known
        so far, and return stored records of newly tagged sessions, re-tagged. ``final``: summaries
        still unresolved go to their own file's session."""
        grown: dict[str, set[str]] = {}
        if self._pending_summaries:
            session_of = {leaf: self._run_line_sessions[hash(leaf)] for leaf, _, _ in self._pending_summaries
                          if leaf and hash(leaf) in self._run_line_sessions}
            session_of.update((r["id"], r["session_id"]) for r in records)
            missing = [leaf for leaf, _, _ in self._pending_summaries if leaf and leaf not in session_of]
            for rid, row in self.store.get_many(missing).items():
                session_of[rid] = row["session_id"]
            waiting = []
            for leaf, text, own_session in self._pending_summaries:
                found = session_of.get(leaf)
                if found is None and leaf and not final:  # its leaf may come in a later file of the run
                    waiting.append((leaf, text, own_session))
                    continue
                session = found or own_session
                if session:
                    self._stats["summaries_attached"] += 1
                    if text not in self._tags.get(session, set()):
                        self._tags.setdefault(session, set()).add(text)
                        grown.setdefault(session, set()).add(text)
            self._pending_summaries = waiting
        for record in records:
            extra = self._tags.get(record["session_id"])
            if extra:
                record["tags"] = sorted(set(record["tags"]) | extra)
        batched = {r["id"] for r in records}
        stored: list[dict] = []
        sessions = sorted(grown)
        for start in range(0, len(sessions), SUMMARY_SESSIONS_PER_QUERY):
            chunk = sessions[start : start + SUMMARY_SESSIONS_PER_QUERY]
            where = "session_id IN (" + ",".join(sql_str(s) for s in chunk) + ")"
            for row in self.store.records_where(where):
                new_tags = set(row["tags"] or []) | self._tags[row["session_id"]]
                if row["id"] not in batched and new_tags != set(row["tags"] or []):
                    stored.append({**row, "tags": sorted(new_tags)})
        return stored


def _nearest_record(parent: str, parents: dict[str, str | None], record_ids: set[str]) -> str:
    """Walk up ``parentUuid`` from ``parent`` to the first record; stop where the chain leaves the lines read."""
    seen: set[str] = set()
    node = parent
    while node not in record_ids and node in parents and node not in seen:
        seen.add(node)
        up = parents[node]
        if up is None:
            return node
        node = up
    return node
