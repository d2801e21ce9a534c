"""OpenCode: ``$XDG_DATA_HOME/opencode`` (default ``~/.local/share/opencode``).

Two layouts (``formats/opencode.md``), read both: since v1.2 one SQLite database ``opencode.db``
(else the first ``opencode-*.db``: a release channel's) with ``session``, ``message`` and ``part``
tables whose ``data`` column is JSON; before, JSON files ``storage/session/<project>/<session>.json``,
``storage/message/<session>/<message>.json`` and ``storage/part/<message>/<part>.json``. Both are
rewritten in place, so every change is read from the start; rows and records are keyed by the
message and part ids, so a session present in both layouts counts once. A JSON file is read with the
files it names (``Source.reads_tree``): a part with its message and session, a message with its parts.

- One usage row per ``step-finish`` part (one model request): a message's own ``tokens`` are only
  its LAST step's (its ``cost`` is the sum). A message with no step-finish part falls back to one
  row from its own tokens.
- ``tokens.input`` already EXCLUDES cache reads and writes: input, output, cache read and cache
  write are stored as written, ``tokens.reasoning`` as extra output (OpenCode bills it on top of
  the output, and ccusage counts it so). ``cost`` is the file's cost when above 0 (used in the ``auto``
  cost mode), else the price table's.
- Partitions: the database is ``opencode:db``, the JSON storage ``opencode:storage``; each row's
  project is its session's ``directory``: ``opencode:<cwd encoded>``.
- Memory: one record per ``text`` part (not ``synthetic``) of a user or assistant message.

Known limit: a database in WAL mode keeps recent writes in ``opencode.db-wal`` until SQLite
checkpoints them into the main file (at ~4 MB of WAL, or when OpenCode closes it); changes are seen
then, since what is watched and archived is the main file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from resources.ingest.session_files import MalformedLine, ParseStats, SessionFile
from resources.sources.base import MemoryItem, Source, UsageItem, count, parse_time, project_name, usage_row
from resources.sources.walk import walk_files

if TYPE_CHECKING:
    import sqlite3

AGENT = "opencode"
DB_PROJECT = f"{AGENT}:db"
STORAGE_PROJECT = f"{AGENT}:storage"


def database_path(root: Path) -> Path | None:
    """``opencode.db``, else the first ``opencode-*.db``, as ccusage picks it."""
    if (root / "opencode.db").is_file():
        return root / "opencode.db"
    channels = sorted(root.glob("opencode-*.db"))
    return channels[0] if channels else None


class OpenCodeSource(Source):
    agent = AGENT
    reads_tree = True

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        db = database_path(self.root)
        if db is not None and (projects is None or DB_PROJECT in projects):
            st = db.stat()
            yield SessionFile(self.key(db), str(db), DB_PROJECT, st.st_size, st.st_mtime_ns)
        if projects is None or STORAGE_PROJECT in projects:
            for path, st in walk_files(self.root / "storage", (".json",)):
                if Path(path).parent.parent.name in ("session", "message", "part"):
                    yield SessionFile(self.key(path), path, STORAGE_PROJECT, st.st_size, st.st_mtime_ns)

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        for message, steps, directory in _assistant_messages(Path(path), stats):
            yield from _usage_rows(message, steps, directory, session_key)

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        for message, part, offset in _text_parts(Path(path), stats):
            text = part.get("text")
            role = message.get("role")
            ts = parse_time(_time(part, "start")) or parse_time(_time(message, "created"))
            if not isinstance(text, str) or not text.strip() or part.get("synthetic") or ts is None \
                    or role not in ("user", "assistant"):
                continue
            model = message.get("modelID") if role == "assistant" else None
            yield MemoryItem(offset, f"opencode:{part['id']}", None, message.get("sessionID"), {
                "role": role, "text": text.strip(), "session_id": message.get("sessionID"), "timestamp": ts,
                "model": model if isinstance(model, str) else None, "git_branch": None})


def _usage_rows(message: dict, steps: list[dict], directory: str | None, session_key: str) -> Iterator[UsageItem]:
    ts = parse_time(_time(message, "created"))
    if ts is None:
        return
    cwd = ((message.get("path") or {}).get("cwd")) or directory
    project = project_name(AGENT, cwd, "unknown")
    model = message.get("modelID") if isinstance(message.get("modelID"), str) else None
    sources = [(f"opencode:{message['id']}:{p['id']}", p) for p in steps] or [(f"opencode:{message['id']}", message)]
    for key, holder in sources:
        tokens = holder.get("tokens") if isinstance(holder.get("tokens"), dict) else {}
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        inp, out, reasoning = count(tokens.get("input")), count(tokens.get("output")), count(tokens.get("reasoning"))
        cread, cwrite = count(cache.get("read")), count(cache.get("write"))
        if not (inp or out or reasoning or cread or cwrite):
            continue
        cost = holder.get("cost")
        step_ts = parse_time(_time(holder, "end")) if holder is not message else None
        row = usage_row(agent=AGENT, dedup_key=key, ts=step_ts or ts, session_id=message.get("sessionID"),
                        session_key=session_key, project=project, model=model, input_tokens=inp,
                        output_tokens=out, cache_creation_tokens=cwrite, cache_read_tokens=cread,
                        extra_output_tokens=reasoning, cwd=cwd, message_id=message["id"],
                        cost_usd=float(cost) if isinstance(cost, int | float) and cost > 0 else None)
        yield UsageItem(key, (1, inp + out + cread + cwrite), row)


def _assistant_messages(path: Path, stats: ParseStats) -> Iterator[tuple[dict, list[dict], str | None]]:
    """(assistant message, its step-finish parts, its session's directory) held by the file at ``path``."""
    if path.suffix == ".db":
        with closing(_open_db(path, stats)) as db:
            directories = dict(db.execute("SELECT id, directory FROM session"))
            steps: dict[str, list[dict]] = {}
            for part_id, message_id, data in db.execute(
                    "SELECT id, message_id, data FROM part WHERE data LIKE '%step-finish%' ORDER BY id"):
                part = _json(data, stats)
                if part is not None and part.get("type") == "step-finish":
                    steps.setdefault(message_id, []).append({**part, "id": part_id})
            for message_id, session_id, data in db.execute(
                    "SELECT id, session_id, data FROM message ORDER BY time_created, id"):
                message = _json(data, stats)
                if message is not None and message.get("role") == "assistant":
                    message = {**message, "id": message_id, "sessionID": session_id}
                    yield message, steps.get(message_id, []), directories.get(session_id)
        return
    kind = path.parent.parent.name
    storage = path.parent.parent.parent
    if kind == "message":
        message = _json_file(path, stats)
        if message is None or message.get("role") != "assistant" or not isinstance(message.get("id"), str):
            return
        parts = [p for p in (_json_file(f, stats) for f in sorted((storage / "part" / message["id"]).glob("*.json")))
                 if p is not None]
        if any(p.get("type") == "step-finish" for p in parts):
            return  # its steps are rows of their own part files
        yield message, [], _directory(storage, message.get("sessionID"))
    elif kind == "part":
        part = _json_file(path, stats)
        if part is None or part.get("type") != "step-finish" or not isinstance(part.get("id"), str):
            return
        message = _json_file(storage / "message" / str(part.get("sessionID")) / f"{part.get('messageID')}.json",
                             stats, missing_ok=True)
        if message is not None and isinstance(message.get("id"), str):
            yield message, [part], _directory(storage, message.get("sessionID"))


def _text_parts(path: Path, stats: ParseStats) -> Iterator[tuple[dict, dict, int]]:
    """(message, text part, position) for every text part the file at ``path`` holds."""
    if path.suffix == ".db":
        with closing(_open_db(path, stats)) as db:
            messages = {}
            for message_id, session_id, data in db.execute("SELECT id, session_id, data FROM message"):
                message = _json(data, stats)
                if message is not None:
                    messages[message_id] = {**message, "id": message_id, "sessionID": session_id}
            rows = db.execute("SELECT id, message_id, data FROM part WHERE data LIKE '%\"text\"%' "
                              "ORDER BY time_created, id")
            for i, (part_id, message_id, data) in enumerate(rows):
                part = _json(data, stats)
                if part is not None and part.get("type") == "text" and message_id in messages:
                    yield messages[message_id], {**part, "id": part_id}, i
        return
    if path.parent.parent.name != "part":
        return
    part = _json_file(path, stats)
    if part is None or part.get("type") != "text" or not isinstance(part.get("id"), str):
        return
    storage = path.parent.parent.parent
    message = _json_file(storage / "message" / str(part.get("sessionID")) / f"{part.get('messageID')}.json",
                         stats, missing_ok=True)
    if message is not None:
        yield message, part, 0


def _open_db(path: Path, stats: ParseStats) -> sqlite3.Connection:
    """The database, read only (a live OpenCode keeps writing it). sqlite3 is imported here: a report that
    reads no OpenCode database never loads it."""
    import sqlite3

    size = path.stat().st_size
    stats.bytes_read += size
    stats.end_offset = size
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _directory(storage: Path, session_id) -> str | None:
    if not isinstance(session_id, str):
        return None
    for candidate in sorted((storage / "session").glob(f"*/{session_id}.json")):
        session = _json_file(candidate, ParseStats(), missing_ok=True)
        if session is not None and isinstance(session.get("directory"), str):
            return session["directory"]
    return None


def _json_file(path: Path, stats: ParseStats, missing_ok: bool = False) -> dict | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    stats.bytes_read += len(data)
    stats.end_offset = max(stats.end_offset, len(data))
    return _json(data, stats)


def _json(data: str | bytes, stats: ParseStats) -> dict | None:
    """A JSON object, or None (counted malformed) for anything else."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        obj, error = None, f"invalid JSON: {exc}"
    else:
        error = None if isinstance(obj, dict) else f"not a JSON object: {type(obj).__name__}"
    if error is not None:
        preview = data[:200] if isinstance(data, str) else data[:200].decode("utf-8", "replace")
        stats.malformed.append(MalformedLine(0, len(data), error, preview))
        return None
    stats.lines += 1
    return obj


def _time(obj: dict, name: str):
    times = obj.get("time")
    return times.get(name) if isinstance(times, dict) else None
