"""What a recall hit means: which agent, project, session, time and role it is, and what was said around it.

One shape for the command line (``sessionlake recall --json``) and the MCP tools alike, `describe`:

``{rank, handle, id, agent, project, session, time, role, score, snippet, model, git_branch, tier,
tags}`` (`HIT_FIELDS`, what the MCP tool returns: an agent reads on with ``context``), plus the
record's whole ``text`` in `ALL_FIELDS` (``recall --json``); ``context: {before: [...], after:
[...]}`` when asked. ``handle`` is opaque: `context_around` takes it back. ``time`` is ISO-8601 UTC;
``agent`` is None for a record no agent session holds (a capture). `MINIMAL_FIELDS` is
``--fields minimal``.

Scope: `scope_filter` narrows a recall by agent, session and role; `parse_since` reads ``7d``, ``3h``,
``30m``, ``2w`` or a date. `fit_budget` shortens texts (never drops hits) until the hits fit a
token budget. `context_around` returns the messages of the hit's session around it, from the memory,
or from the newest archived version of the session file when the memory no longer holds them.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

from resources.memory.schema import RECORDS, sql_str
from resources.times import as_utc

MINIMAL_FIELDS = ("rank", "handle", "agent", "session", "time", "role", "snippet")
HIT_FIELDS = ("rank", "handle", "id", "agent", "project", "session", "time", "role", "score", "snippet", "model",
              "git_branch", "tier", "tags")
ALL_FIELDS = (*HIT_FIELDS, "text")
ROLES = ("user", "assistant")
CHARS_PER_TOKEN = 4
"""The budget's estimate of a token: four characters of JSON, as tokenizers average on English and code."""
MIN_SNIPPET_CHARS = 24
HANDLE_PREFIX = "h."
"""Starts every handle, so none starts with "-" (a command line would read it as an option)."""
MESSAGE_COLUMNS = ["id", "role", "timestamp", "text", "session_id", "session_key", "project"]
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``7d`` / ``3h`` / ``30m`` / ``2w`` before ``now``, or an ISO date or time (UTC unless it says);
    ValueError with the accepted forms otherwise."""
    match = _RELATIVE.match(value or "")
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2].lower()]: int(match[1])})
    try:
        return as_utc(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{value!r} is not a time: use 30m, 3h, 7d, 2w, or a date (YYYY-MM-DD or ISO-8601)") from None


def scope_filter(agent: str | None = None, session: str | None = None, role: str | None = None) -> str | None:
    """The Lance SQL filter for an agent (``claude``, ``codex``, ...), a session (its id, a prefix of it
    as recall prints it, or its key) and a role; None when unbounded. ValueError for an unknown agent or role."""
    from resources.sources import AGENTS

    clauses = []
    if agent:
        if agent not in AGENTS:
            raise ValueError(f"agent {agent!r}: expected one of {', '.join(AGENTS)}")
        others = [a for a in AGENTS if a != "claude"]
        if agent == "claude":  # Claude Code's keys are the only ones without an "<agent>:" head
            clauses.append("session_key IS NOT NULL AND NOT ("
                           + " OR ".join(f"starts_with(session_key, {sql_str(a + ':')})" for a in others) + ")")
        else:
            clauses.append(f"starts_with(session_key, {sql_str(agent + ':')})")
    if session:
        clauses.append(f"(starts_with(session_id, {sql_str(session)}) OR session_key = {sql_str(session)})")
    if role:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        clauses.append(f"role = {sql_str(role)}")
    return " AND ".join(clauses) or None


def make_handle(hit: dict) -> str:
    """An opaque handle for ``hit``: its id, session key and project, enough to find it in the archive too."""
    raw = json.dumps([hit.get("id"), hit.get("session_key"), hit.get("project")], separators=(",", ":"))
    return HANDLE_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read_handle(handle: str) -> tuple[str, str | None, str | None]:
    """``(record id, session key, project)`` of a handle; a bare record id is taken as one. ValueError if neither."""
    if handle.startswith(HANDLE_PREFIX):
        body = handle[len(HANDLE_PREFIX):]
        try:
            record_id, key, project = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if isinstance(record_id, str):
                return record_id, key, project
        except (ValueError, TypeError):
            pass
    if not handle or not re.fullmatch(r"[\w.:-]+", handle):
        raise ValueError(f"{handle!r} is not a hit handle or a record id")
    return handle, None, None


def describe(hit: dict, rank: int, words: str, width: int, mark: tuple[str, str] = ("**", "**"),
             fields: tuple[str, ...] = ALL_FIELDS) -> dict:
    """The documented shape of one hit (see the module doc), with ``fields`` only."""
    from resources.memory.recall import snippet
    from resources.sources import agent_of

    key = hit.get("session_key")
    row = {"rank": rank, "handle": make_handle(hit), "id": hit["id"], "agent": agent_of(key) if key else None,
           "project": hit.get("project"), "session": hit.get("session_id"), "time": _iso(hit.get("timestamp")),
           "role": hit.get("role"), "score": hit.get("score"),
           "snippet": snippet(hit.get("text") or "", words, width, mark), "model": hit.get("model"),
           "git_branch": hit.get("git_branch"), "tier": hit.get("tier"), "tags": list(hit.get("tags") or []),
           "text": hit.get("text")}
    return {f: row[f] for f in fields}


def message(row: dict, width: int | None = None) -> dict:
    """One message of a session as context shows it: ``{id, role, time, text}`` (text cut to ``width``)."""
    text = " ".join((row.get("text") or "").split())
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return {"id": row.get("id"), "role": row.get("role"), "time": _iso(row.get("timestamp")), "text": text}


def fit_budget(hits: list[dict], max_tokens: int) -> list[dict]:
    """``hits`` (described) with snippets, texts and context texts shortened evenly until their `compact_json`
    fits ``max_tokens`` (at `CHARS_PER_TOKEN`); every hit stays. Past `MIN_SNIPPET_CHARS` a text is not cut
    further, so a budget too small for the hits themselves is exceeded rather than met by dropping one."""
    def size(rows: list[dict]) -> int:
        return len(compact_json(rows)) // CHARS_PER_TOKEN

    if size(hits) <= max_tokens:
        return hits
    longest = max((len(t) for h in hits for t in _texts(h)), default=0)
    lo, hi, best = MIN_SNIPPET_CHARS, max(longest, MIN_SNIPPET_CHARS), None
    while lo <= hi:  # the widest cut that fits
        mid = (lo + hi) // 2
        cut = [_cut(h, mid) for h in hits]
        if size(cut) <= max_tokens:
            best, lo = cut, mid + 1
        else:
            hi = mid - 1
    return best if best is not None else [_cut(h, MIN_SNIPPET_CHARS) for h in hits]


def compact_json(rows) -> str:
    """``rows`` as JSON without spaces, as `fit_budget` measures it (print it so when a budget applies)."""
    return json.dumps(rows, default=str, ensure_ascii=False, separators=(",", ":"))


def _texts(hit: dict) -> list[str]:
    ctx = hit.get("context") or {}
    return [hit.get("snippet") or "", hit.get("text") or ""] + [m["text"] for side in ("before", "after")
                                                                for m in ctx.get(side, [])]


def _cut(hit: dict, width: int) -> dict:
    out = {**hit}
    for field in ("snippet", "text"):
        if out.get(field):
            out[field] = _shorten(out[field], width)
    if out.get("context"):
        out["context"] = {side: [{**m, "text": _shorten(m["text"], width)} for m in msgs]
                          for side, msgs in out["context"].items()}
    return out


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = as_utc(value)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- context -------------------------------------------------------------------------------------------


def _records(store, where: str, columns: list[str], limit: int | None = None) -> list[dict]:
    """Rows of ``records`` matching a filter, read through pylance (no lancedb import)."""
    return store.dataset(RECORDS).to_table(columns=columns, filter=where, limit=limit).to_pylist()


def session_messages(store, session_key: str) -> list[dict]:
    """Every record of one session in the memory, in time order (then id)."""
    rows = _records(store, f"session_key = {sql_str(session_key)}", MESSAGE_COLUMNS)
    return sorted(rows, key=lambda r: (r["timestamp"] or datetime.min.replace(tzinfo=UTC), r["id"]))


def find_session(store, session: str) -> str | None:
    """The session key of a session id (or a prefix of one, or a key); None when the memory has none."""
    rows = _records(store, scope_filter(session=session), ["session_key", "session_id"], limit=50)
    keys = {r["session_key"] for r in rows if r["session_key"]}
    if len(keys) > 1:
        exact = {r["session_key"] for r in rows if r["session_id"] == session or r["session_key"] == session}
        if len(exact) == 1:
            return exact.pop()
        raise ValueError(f"session {session!r} is ambiguous: it starts {len(keys)} sessions; give more of it")
    return keys.pop() if keys else None


def find_archived_session(packs, session: str) -> tuple[str, str] | None:
    """``(project, session key)`` of the archived session file whose key is ``session`` or whose name
    starts with it (Claude Code names a file after its session id); None when the archive has none."""
    found = {(repo, v.snapshot.session_key) for repo in packs.repos() for v in packs.versions(repo)
             if v.snapshot.session_key == session
             or v.snapshot.session_key.rsplit("/", 1)[-1].startswith(session)}
    if len(found) > 1:
        raise ValueError(f"session {session!r} is ambiguous in the archive: {len(found)} session files match")
    return found.pop() if found else None


def load_session(store, session: str, packs=None) -> dict | None:
    """``{session_key, project, source, messages}`` of one session (id, prefix or key), from the memory,
    else from the archive (``packs``: a `PackStore` or a callable returning one); None when neither has it."""
    key = find_session(store, session)
    if key is not None:
        rows = session_messages(store, key)
        return {"session_key": key, "project": rows[0]["project"], "source": "memory", "messages": rows}
    if packs is None:
        return None
    packs = packs() if callable(packs) else packs
    found = find_archived_session(packs, session)
    if found is None:
        return None
    project, key = found
    return {"session_key": key, "project": project, "source": "archive",
            "messages": archived_messages(packs, project, key)}


def archived_messages(packs, project: str, session_key: str) -> list[dict]:
    """The messages of the newest archived version of one session file, parsed as an ingest would, in time order."""
    import tempfile

    from resources.ingest.session_files import ParseStats
    from resources.sources import source_type

    timeline = packs.timeline(project, session_key)
    if not timeline:
        return []
    newest = max(timeline, key=lambda o: (o.observed_at, o.snapshot.mtime_ns)).snapshot
    rows = []
    with tempfile.TemporaryDirectory(prefix=".context-", dir=packs.packs_dir.parent) as scratch:
        for _, _, path in packs.export_versions([(project, newest)], scratch):
            for item in source_type(session_key).memory(path, session_key, project, 0, ParseStats()):
                if item.record is not None and item.id:
                    rec = item.record
                    rows.append({"id": item.id, "role": rec.get("role"), "timestamp": as_utc(rec.get("timestamp")),
                                 "text": rec.get("text"), "session_id": rec.get("session_id"),
                                 "session_key": session_key, "project": project})
    return sorted(rows, key=lambda r: (r["timestamp"] or datetime.min.replace(tzinfo=UTC), r["id"]))


def context_around(store, handle: str, before: int = 3, after: int = 3, packs=None,
                   width: int | None = None) -> dict | None:
    """The messages around the hit ``handle`` names: ``{hit, before, after, source, session, session_key,
    project}`` with ``source`` ``memory`` or ``archive``; None when neither holds the hit.

    The memory is read first; when it no longer holds the hit or its session (a rebuild without that
    file), ``packs`` (a `PackStore`, or a callable returning one) gives the newest archived version.
    """
    record_id, key, project = read_handle(handle)
    if key is None:  # a bare record id: its session comes from the memory
        found = _records(store, f"id = {sql_str(record_id)}", ["session_key", "project"], limit=1)
        if not found:
            return None
        key, project = found[0]["session_key"], found[0]["project"]
    source, rows = "memory", session_messages(store, key) if key else []
    if not any(r["id"] == record_id for r in rows) and packs is not None and key and project:
        source, rows = "archive", archived_messages(packs() if callable(packs) else packs, project, key)
    at = next((i for i, r in enumerate(rows) if r["id"] == record_id), None)
    if at is None:
        return None
    hit = rows[at]
    return {"hit": message(hit, width), "before": [message(r, width) for r in rows[max(at - before, 0):at]],
            "after": [message(r, width) for r in rows[at + 1: at + 1 + after]], "source": source,
            "session": hit.get("session_id"), "session_key": key, "project": project}
