"""OpenAI Codex CLI (and Codex Desktop, the VS Code extension): rollout files under ``$CODEX_HOME``.

``sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl`` and ``archived_sessions/**`` (the ``sessions/``
copy wins when both hold the same path). Each line is ``{timestamp, type, payload}``; facts and
traps in ``formats/codex.md``. What this adapter does about them:

- Token counts (``event_msg`` ``token_count`` ``payload.info``) are CUMULATIVE per thread: a row is
  ``last_token_usage`` (or the difference of two totals when a writer left ``last`` out).
- Codex re-emits a ``token_count`` with the same totals a second later; a forked or sub-agent file
  replays its parent's events. A row's key is derived from the cumulative total it ends at and its
  own counts, so a re-emit, a replayed parent event, the archived copy of a file and a re-read of a
  rewritten file all land on the same key and count once.
- ``input_tokens`` INCLUDES ``cached_input_tokens``, and ``output_tokens`` already includes
  ``reasoning_output_tokens``: stored as input = input - cached, cache read = cached, output = output.
  A "total only" event (context window filled: every count 0) is not a request and is skipped.
- The model is the latest ``turn_context.payload.model`` before the event (``gpt-5`` when a very
  early file has none, as ccusage does).
- The project is the session's ``cwd`` (``session_meta.payload.cwd``): ``codex:<cwd encoded>``.
- A usage row's session id is ccusage's: the rollout's path under ``sessions/`` (or
  ``archived_sessions/``) without ``.jsonl``, ``2026/02/23/rollout-...``; ``reasoning_output_tokens``
  is kept apart (it is inside ``output_tokens`` already).

Files are read from byte 0 on every change (the model and the running total depend on earlier
lines); they are small, and the stable keys make a re-read free of double counting.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from resources.ingest.session_files import JsonLine, ParseStats, SessionFile, iter_jsonl
from resources.sources.base import MemoryItem, Source, UsageItem, count, parse_time, project_name, usage_row
from resources.sources.walk import walk_files

AGENT = "codex"
FALLBACK_MODEL = "gpt-5"
FOLDERS = ("sessions", "archived_sessions")
_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")
_FIRST_LINE_LIMIT = 1 << 20
_projects: dict[tuple[str, int], str] = {}
"""Project of each rollout by (path, inode): its first line never changes once written."""


def _counts(usage) -> tuple[int, ...] | None:
    if not isinstance(usage, dict):
        return None
    return tuple(count(usage.get(k)) for k in _FIELDS)


def session_cwd(path: str) -> str | None:
    """``payload.cwd`` of the file's first line (``session_meta``), reading only that line."""
    try:
        with open(path, "rb") as f:
            first = f.readline(_FIRST_LINE_LIMIT)
        obj = orjson.loads(first)
    except (OSError, orjson.JSONDecodeError):
        return None
    payload = obj.get("payload") if isinstance(obj, dict) else None
    cwd = payload.get("cwd") if isinstance(payload, dict) else None
    return cwd if isinstance(cwd, str) and cwd else None


class CodexSource(Source):
    agent = AGENT

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        seen: set[str] = set()
        # A CODEX_HOME without sessions/ or archived_sessions/ holds rollouts itself, as ccusage reads it.
        for folder in [f for f in FOLDERS if (self.root / f).is_dir()] or [""]:
            base = self.root / folder
            for path, st in walk_files(base, (".jsonl",)):
                tail = os.path.relpath(path, base)
                if tail in seen:  # the live copy of an archived session wins
                    continue
                seen.add(tail)
                project = self._project(path, st.st_ino)
                if projects is None or project in projects:
                    yield SessionFile(self.key(path), path, project, st.st_size, st.st_mtime_ns)

    def _project(self, path: str, inode: int) -> str:
        cached = _projects.get((path, inode))
        if cached is None:
            cwd = session_cwd(path)
            cached = project_name(AGENT, cwd, "unknown")
            if cwd is not None:  # a file still being created gets another look next time
                _projects[(path, inode)] = cached
        return cached

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        cwd = model = None
        previous: tuple[int, ...] | None = None
        for line, kind, payload in _events(path, stats):
            if kind == "session_meta":
                cwd = cwd or _str(payload.get("cwd"))
            elif kind == "turn_context":
                model = _str(payload.get("model")) or model
                cwd = cwd or _str(payload.get("cwd"))
            elif kind == "event_msg" and payload.get("type") == "token_count":
                info = payload.get("info")
                total = _counts(info.get("total_token_usage")) if isinstance(info, dict) else None
                if total is None or total == previous:  # no usage yet, or a re-emit of the last event
                    continue
                last = _counts(info.get("last_token_usage"))
                if last is None:
                    last = tuple(max(t - p, 0) for t, p in zip(total, previous or (0,) * 5, strict=True))
                previous = total
                inp, cached, out, reasoning, _ = last
                if not (inp or cached or out or reasoning):
                    continue
                ts = parse_time(line.obj.get("timestamp"))
                if ts is None:
                    stats.reject(line, f"timestamp is not an ISO-8601 time: {line.obj.get('timestamp')!r}"[:200])
                    continue
                key = "codex:" + hashlib.sha256(orjson.dumps([total, last])).hexdigest()[:32]
                row = usage_row(agent=AGENT, dedup_key=key, ts=ts, session_id=usage_session_id(session_key),
                                session_key=session_key, project=project,
                                model=_str(info.get("model")) or model or FALLBACK_MODEL,
                                input_tokens=max(inp - cached, 0), output_tokens=out, cache_read_tokens=cached,
                                reasoning_output_tokens=reasoning, cwd=cwd, line_offset=line.offset)
                yield UsageItem(key, (1, inp + out), row)

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        session_id = model = None
        parent: str | None = None
        for line, kind, payload in _events(path, stats):
            if kind == "session_meta":
                session_id = session_id or _str(payload.get("id"))
            elif kind == "turn_context":
                model = _str(payload.get("model")) or model
            elif kind == "event_msg" and payload.get("type") in ("user_message", "agent_message"):
                text = payload.get("message")
                if not isinstance(text, str) or not text.strip():
                    continue
                ts = parse_time(line.obj.get("timestamp"))
                if ts is None:
                    stats.reject(line, f"timestamp is not an ISO-8601 time: {line.obj.get('timestamp')!r}"[:200])
                    continue
                role = "user" if payload["type"] == "user_message" else "assistant"
                sid = session_id or _stem_id(path)
                record_id = f"codex:{sid}:{line.offset}"
                yield MemoryItem(line.offset, record_id, parent, sid, {
                    "role": role, "text": text.strip(), "session_id": sid, "timestamp": ts,
                    "model": model if role == "assistant" else None, "git_branch": None})
                parent = record_id


def _events(path: Path, stats: ParseStats) -> Iterator[tuple[JsonLine, str | None, dict]]:
    """``(line, type, payload)`` of each line of a rollout whose payload is an object, from byte 0."""
    for line in iter_jsonl(path, 0, stats):
        payload = line.obj.get("payload")
        if isinstance(payload, dict):
            yield line, line.obj.get("type"), payload


def usage_session_id(session_key: str) -> str:
    """ccusage's id of a rollout: its path under ``sessions/`` or ``archived_sessions/``, without ``.jsonl``."""
    path = session_key.removeprefix(f"{AGENT}:")
    head, sep, rest = path.partition("/")
    return (rest if sep and head in FOLDERS else path).removesuffix(".jsonl")


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _stem_id(path: Path | str) -> str:
    """The session uuid at the end of a rollout file name (the last five dash-separated groups)."""
    return "-".join(Path(path).stem.split("-")[-5:])
