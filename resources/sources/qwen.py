"""Qwen Code (a Gemini CLI fork): ``~/.qwen/projects/<project>/chats/<session id>.jsonl``, append-only.

Records carry ``uuid``, ``parentUuid``, ``sessionId``, ``timestamp``, ``type`` and ``cwd``
(``formats/qwen.md``); the project folder name already encodes the cwd as Claude Code's does.
- One usage row per ``type == "assistant"`` record with ``usageMetadata``, keyed by its uuid. The
  ``system``/``ui_telemetry`` ``api_response`` events repeat the same numbers and are not counted.
- Gemini semantics: ``promptTokenCount`` INCLUDES ``cachedContentTokenCount``, ``thoughtsTokenCount``
  is NOT inside ``candidatesTokenCount``: stored as input = prompt - cached, cache read = cached,
  output = candidates, extra output = thoughts.
- Memory: the text parts of ``user`` and ``assistant`` records, threaded by ``parentUuid``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from resources.ingest.session_files import ParseStats, SessionFile, iter_jsonl
from resources.sources.base import MemoryItem, Source, UsageItem, count, parse_time, project_name, usage_row
from resources.sources.walk import walk_files

AGENT = "qwen"


class QwenSource(Source):
    agent = AGENT
    append_only = True

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        base = self.root / "projects"
        try:
            folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for folder in folders:
            project = project_name(AGENT, None, folder.name)
            if projects is None or project in projects:
                for path, st in walk_files(folder / "chats", (".jsonl",)):
                    yield SessionFile(self.key(path), path, project, st.st_size, st.st_mtime_ns)

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        for line in iter_jsonl(path, start_offset, stats, contains=b'"usageMetadata"'):
            obj = line.obj
            usage = obj.get("usageMetadata")
            if obj.get("type") != "assistant" or not isinstance(usage, dict) or not isinstance(obj.get("uuid"), str):
                continue
            ts = parse_time(obj.get("timestamp"))
            if ts is None:
                stats.reject(line, f"timestamp is not an ISO-8601 time: {obj.get('timestamp')!r}"[:200])
                continue
            prompt, cached = count(usage.get("promptTokenCount")), count(usage.get("cachedContentTokenCount"))
            out, thoughts = count(usage.get("candidatesTokenCount")), count(usage.get("thoughtsTokenCount"))
            key = f"qwen:{obj['uuid']}"
            row = usage_row(agent=AGENT, dedup_key=key, ts=ts, session_id=_str(obj.get("sessionId")),
                            session_key=session_key, project=project, model=_str(obj.get("model")),
                            input_tokens=max(prompt - cached, 0), output_tokens=out, cache_read_tokens=cached,
                            extra_output_tokens=thoughts, cwd=_str(obj.get("cwd")), message_id=obj["uuid"],
                            line_offset=line.offset)
            yield UsageItem(key, (1, prompt + out + thoughts), row)

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        for line in iter_jsonl(path, start_offset, stats):
            obj = line.obj
            uuid, session_id = _str(obj.get("uuid")), _str(obj.get("sessionId"))
            record = None
            message = obj.get("message")
            if obj.get("type") in ("user", "assistant") and isinstance(message, dict):
                parts = message.get("parts")
                text = "\n\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)) \
                    if isinstance(parts, list) else ""
                ts = parse_time(obj.get("timestamp"))
                if text.strip() and ts is not None:
                    record = {"role": obj["type"], "text": text.strip(), "session_id": session_id, "timestamp": ts,
                              "model": _str(obj.get("model")), "git_branch": None}
            yield MemoryItem(line.offset, f"qwen:{uuid}" if uuid else None,
                             f"qwen:{obj['parentUuid']}" if _str(obj.get("parentUuid")) else None, session_id, record)


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None
