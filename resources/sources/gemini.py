"""Google Gemini CLI: chat recordings under ``~/.gemini/tmp/<project-id>/chats/`` (``$GEMINI_CLI_HOME/.gemini``).

Two formats (``formats/gemini.md``): legacy ``session-*.json``, one JSON object rewritten in place on
every update, and (v0.39+) ``session-*.jsonl``, append-only: a metadata line, then message records
in which the same ``id`` is appended again whenever the message changes (the last copy wins),
``{"$set": ...}`` patches and ``{"$rewindTo": id}``.

- One usage row per ``type == "gemini"`` message with ``tokens``, keyed by (session id, message id):
  a later copy of a message, the same session as ``.json`` and as converted ``.jsonl``, and a
  re-read all count once. Rewound messages keep their rows (the tokens were spent, as ccusage counts).
- ``tokens.input`` INCLUDES ``cached``, and ``thoughts`` are NOT inside ``output`` (both billed as
  output): stored as input = input - cached + tool, cache read = cached, output = output, extra
  output = thoughts.
- Memory applies ``$rewindTo`` (the visible conversation): user prompts and gemini answers.
- The project is the folder's ``.project_root`` (v0.29+), else the path whose SHA-256 is the
  folder name in ``projects.json`` (older hash folders), else the folder name: ``gemini:<cwd encoded>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from resources.ingest.session_files import MalformedLine, ParseStats, SessionFile, iter_jsonl
from resources.sources.base import MemoryItem, Source, UsageItem, count, parse_time, project_name, usage_row
from resources.sources.walk import walk_files

AGENT = "gemini"
SUFFIXES = (".json", ".jsonl")


class GeminiSource(Source):
    agent = AGENT

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        tmp = self.root / "tmp" if (self.root / "tmp").is_dir() else self.root  # GEMINI_DATA_DIR names tmp/
        try:
            folders = sorted(p for p in tmp.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        known = self._registered_paths()
        for folder in folders:
            project = project_name(AGENT, _project_root(folder) or known.get(folder.name), folder.name)
            if projects is not None and project not in projects:
                continue
            for path, st in walk_files(folder / "chats", SUFFIXES):
                yield SessionFile(self.key(path), path, project, st.st_size, st.st_mtime_ns)

    def _registered_paths(self) -> dict[str, str]:
        """Hash folder name -> project path, for the paths ``projects.json`` lists."""
        try:
            registry = orjson.loads((self.root / "projects.json").read_bytes()).get("projects", {})
        except (OSError, orjson.JSONDecodeError, AttributeError):
            return {}
        return {hashlib.sha256(p.encode()).hexdigest(): p for p in registry if isinstance(p, str)}

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        session_id, messages, _ = _read(path, stats, rewinds=False)
        for offset, msg in messages.values():
            tokens = msg.get("tokens")
            if msg.get("type") != "gemini" or not isinstance(tokens, dict):
                continue
            ts = parse_time(msg.get("timestamp"))
            if ts is None:
                stats.malformed.append(_bad_time(offset, msg))
                continue
            inp, cached, out, thoughts, tool = (count(tokens.get(k)) for k in
                                                ("input", "cached", "output", "thoughts", "tool"))
            key = f"gemini:{session_id}:{msg.get('id')}"
            row = usage_row(agent=AGENT, dedup_key=key, ts=ts, session_id=session_id, session_key=session_key,
                            project=project, model=_str(msg.get("model")), input_tokens=max(inp - cached, 0) + tool,
                            output_tokens=out, cache_read_tokens=cached, extra_output_tokens=thoughts,
                            message_id=_str(msg.get("id")), line_offset=offset)
            yield UsageItem(key, (1, inp + tool + out + thoughts), row)

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        session_id, messages, _ = _read(path, stats, rewinds=True)
        parent: str | None = None
        for offset, msg in messages.values():
            role = {"user": "user", "gemini": "assistant"}.get(msg.get("type"))
            text = _text(msg.get("content"))
            ts = parse_time(msg.get("timestamp"))
            if role is None or not text or ts is None:
                continue
            record_id = f"gemini:{session_id}:{msg.get('id')}"
            yield MemoryItem(offset, record_id, parent, session_id, {
                "role": role, "text": text, "session_id": session_id, "timestamp": ts,
                "model": _str(msg.get("model")), "git_branch": None})
            parent = record_id


def _read(path: Path, stats: ParseStats, rewinds: bool) -> tuple[str, dict[str, tuple[int, dict]], dict]:
    """(session id, {message id: (offset, last copy)} in first-seen order, metadata) of either format."""
    messages: dict[str, tuple[int, dict]] = {}
    meta: dict = {}
    if str(path).endswith(".jsonl"):
        for line in iter_jsonl(path, 0, stats):
            obj = line.obj
            if "$rewindTo" in obj:
                if rewinds:
                    _rewind(messages, obj["$rewindTo"])
            elif "$set" in obj:
                if isinstance(obj["$set"], dict):
                    meta.update(obj["$set"])
            elif isinstance(obj.get("id"), str) and "type" in obj:
                first = messages.get(obj["id"])
                messages[obj["id"]] = (first[0] if first else line.offset, obj)
            elif "sessionId" in obj:
                meta.update(obj)
    else:
        with open(path, "rb") as f:
            data = f.read()
        stats.bytes_read += len(data)
        stats.end_offset = len(data)
        try:
            meta = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a Gemini chat recording (invalid JSON: {exc})") from None
        if not isinstance(meta, dict):
            raise ValueError("not a Gemini chat recording (not a JSON object)")
        for i, msg in enumerate(meta.get("messages") or []):
            if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                messages[msg["id"]] = (i, msg)
                stats.lines += 1
    session_id = _str(meta.get("sessionId")) or Path(path).stem
    return session_id, messages, meta


def _rewind(messages: dict[str, tuple[int, dict]], target) -> None:
    """Drop ``target`` and every message after it (all of them when the id is unknown)."""
    ids = list(messages)
    cut = ids.index(target) if target in messages else 0
    for message_id in ids[cut:]:
        del messages[message_id]


def _project_root(folder: Path) -> str | None:
    try:
        return (folder / ".project_root").read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _text(content) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        return "\n\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)).strip()
    return ""


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _bad_time(offset: int, msg: dict) -> MalformedLine:
    return MalformedLine(offset, 0, f"timestamp is not an ISO-8601 time: {msg.get('timestamp')!r}"[:200],
                         orjson.dumps(msg)[:200].decode("utf-8", "replace"))
