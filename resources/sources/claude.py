"""Claude Code: ``~/.claude/projects/<project>/**/*.jsonl``, one append-only JSONL transcript per session.

Usage: only a top-level ``message.usage`` counts, on lines whose ``type`` is ``assistant`` or absent
(older writers omit it); ``progress`` lines that embed copies of subagent messages are ignored. One
response is written as several lines sharing ``message.id`` and ``requestId``: the key is
(message.id, requestId), falling back to message.id, and the best copy (non-sidechain, then the
largest token total) wins. Claude's ``input_tokens`` already exclude cache reads and writes.

Memory: a ``user`` line whose content is a string or has ``text`` blocks (not ``tool_result``, not
``isMeta``) and an ``assistant`` line's ``text`` blocks are records, id = the line's ``uuid``;
threading follows ``parentUuid``; ``summary`` lines name a leaf uuid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from resources.ingest.session_files import JsonLine, ParseStats, SessionFile, iter_jsonl, walk_sessions
from resources.sources.base import MemoryItem, Source, UsageItem
from resources.times import as_utc, parse_iso

AGENT = "claude"
MAX_TOKENS = 2**63 - 1
"""The largest count a warehouse column (BIGINT) holds; a line's four counts together must fit too."""

_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_CACHE_SPLIT_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_STRING_FIELDS = ("requestId", "sessionId", "gitBranch", "cwd", "agentId", "message.id", "message.model")


class MalformedUsage(ValueError):
    """A line carries usage that cannot become a warehouse row; the message says which value and why."""


def response_key(obj: dict, offset: int, session_key: str) -> tuple[str, tuple[int, int]] | None:
    """(de-duplication key, best-copy rank) of a line carrying billable usage, else None.

    Raises `MalformedUsage` when the line carries usage that cannot be stored: a count that is not an
    integer in 0..2^63-1 (null or absent counts are 0), a total beyond that, a text field that is not a
    string, or no ISO-8601 timestamp. Such a line never competes for best copy, so it costs nothing
    but itself. Cheap on purpose: it runs on every assistant line.
    """
    if obj.get("type", "assistant") != "assistant":
        return None
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return None
    total = _check_counts(usage, _TOKEN_KEYS, "usage.")
    split = usage.get("cache_creation")
    if split.__class__ is dict:
        _check_counts(split, _CACHE_SPLIT_KEYS, "usage.cache_creation.")
    for value in (obj.get("requestId"), obj.get("sessionId"), obj.get("gitBranch"), obj.get("cwd"),
                  obj.get("agentId"), message.get("id"), message.get("model")):
        if value is not None and value.__class__ is not str:
            raise MalformedUsage(_wrong_string(obj, message))
    if parse_iso(obj.get("timestamp")) is None:
        raise MalformedUsage(f"timestamp is not an ISO-8601 time: {obj.get('timestamp')!r}"[:200])
    return dedup_key(message.get("id"), obj.get("requestId"), offset, session_key), \
        (0 if obj.get("isSidechain") else 1, total)


def dedup_key(message_id: str | None, request_id: str | None, offset: int, session_key: str) -> str:
    """(message.id, requestId), else message.id, else the line's own position (nothing to de-duplicate on)."""
    if message_id and request_id:
        return f"{message_id}:{request_id}"
    if message_id:
        return message_id
    import hashlib  # here: walking the folders (a stored report's check) loads no hash

    return "pos:" + hashlib.sha256(f"{session_key}\0{offset}".encode()).hexdigest()[:32]


def _check_counts(counts: dict, keys: tuple[str, ...], prefix: str) -> int:
    """The sum of ``counts[keys]`` (absent or null: 0); `MalformedUsage` for any value that is not a
    token count, or a sum that a BIGINT cannot hold."""
    total = 0
    for key in keys:
        value = counts.get(key)
        if value.__class__ is int and 0 <= value <= MAX_TOKENS:  # exact class: a bool is refused
            total += value
        elif value is not None:
            raise MalformedUsage(f"{prefix}{key} is not a token count (an integer 0..2^63-1): {value!r}"[:200])
    if total > MAX_TOKENS:
        raise MalformedUsage(f"{prefix}* token counts add up to {total}, more than 2^63-1")
    return total


def usage_row(key: str, obj: dict, offset: int, session_key: str, project: str) -> dict:
    """The warehouse row for the line ``obj``, which `response_key` accepted."""
    message = obj["message"]
    usage = message["usage"]
    cache_split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    cost = obj.get("costUSD")
    return {
        "dedup_key": key,
        "message_id": message.get("id"),
        "request_id": obj.get("requestId"),
        "ts": parse_iso(obj["timestamp"]),
        "session_id": obj.get("sessionId"),
        "session_key": session_key,
        "project": project,
        "model": billed_model(message.get("model"), usage.get("speed")),
        "git_branch": obj.get("gitBranch") or None,
        "cwd": obj.get("cwd"),
        "is_sidechain": bool(obj.get("isSidechain", False)),
        "agent_id": obj.get("agentId"),
        "input_tokens": _int(usage.get("input_tokens")),
        "output_tokens": _int(usage.get("output_tokens")),
        "cache_creation_tokens": _int(usage.get("cache_creation_input_tokens")),
        "cache_read_tokens": _int(usage.get("cache_read_input_tokens")),
        "cache_creation_1h_tokens": _int(cache_split.get("ephemeral_1h_input_tokens")),
        "cost_usd": float(cost) if isinstance(cost, int | float) else None,
        "line_offset": offset,
        "agent": AGENT,
        "extra_output_tokens": 0,
        "reasoning_output_tokens": 0,
    }


def billed_model(model, speed) -> str | None:
    """The model name a response is reported and priced under: ``<model>-fast`` for fast mode (``usage.speed``
    ``"fast"``), as ccusage does."""
    if model and speed == "fast":
        from resources.usage.pricing import FAST_SUFFIX  # here: walking the folders loads no price table

        return model if model.endswith(FAST_SUFFIX) else model + FAST_SUFFIX
    return model


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


class ClaudeSource(Source):
    """Claude Code's projects folder; keys and project names are the paths under it, as before."""

    agent = AGENT
    append_only = True

    def key(self, path: Path | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        return walk_sessions(self.root, projects)

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        from resources.sources.claude_usage_lines import UsageLine, as_dict, decode, typed_row, usage_total

        best: dict[str, tuple[tuple[int, int], int, dict | UsageLine]] = {}
        for line in iter_jsonl(path, start_offset, stats, contains=b'"usage"', loads=decode):
            obj = line.obj
            if obj.__class__ is UsageLine:  # decoded and checked in C (the common case)
                total = usage_total(obj)
                keyed = None if total is None else (
                    dedup_key(obj.message.id, obj.requestId, line.offset, session_key),
                    (0 if obj.isSidechain else 1, total))
            else:
                try:
                    keyed = response_key(obj, line.offset, session_key)
                except MalformedUsage as exc:
                    stats.reject(line, str(exc))
                    continue
            if keyed is not None:
                key, rank = keyed
                current = best.get(key)
                if current is None or rank > current[0]:
                    best[key] = (rank, line.offset, obj)
        for key, (rank, offset, obj) in best.items():
            row = typed_row(key, obj, offset, session_key, project) if obj.__class__ is UsageLine else None
            if row is None:
                row = usage_row(key, as_dict(obj) if obj.__class__ is UsageLine else obj, offset, session_key, project)
            yield UsageItem(key, rank, row)

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        from resources.sources.claude_memory_lines import MemoryLine, decode, memory_item

        for line in iter_jsonl(path, start_offset, stats, loads=decode):
            # decoded and checked in C (the common case), or parsed by orjson
            item = memory_item(line.obj, line.offset) if line.obj.__class__ is MemoryLine else dict_memory_item(
                line, stats)
            if item is not None:
                yield item


def dict_memory_item(line: JsonLine, stats: ParseStats) -> MemoryItem | None:
    """The `MemoryItem` of a line orjson parsed (None for a summary without text); a prompt or answer whose
    fields cannot be stored is counted malformed in ``stats`` and kept as an item without a record."""
    obj = line.obj
    if obj.get("type") == "summary":
        if isinstance(obj.get("summary"), str) and obj["summary"].strip():
            return MemoryItem(line.offset, summary=(obj.get("leafUuid"), obj["summary"].strip()))
        return None
    uuid = obj.get("uuid") if isinstance(obj.get("uuid"), str) else None
    parent = obj.get("parentUuid") if isinstance(obj.get("parentUuid"), str) else None
    session_id = obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else None
    found = line_text(obj)
    record = None
    if found is not None:
        try:
            record = {"role": found[0], "text": found[1], **record_fields(obj)}
        except ValueError as exc:
            stats.reject(line, str(exc))
    return MemoryItem(line.offset, uuid, parent, session_id, record)


def _wrong_string(obj: dict, message: dict) -> str:
    """Which text field of a line is not a string (the slow path of `response_key`)."""
    values = {name: (message if name.startswith("message.") else obj).get(name.removeprefix("message."))
              for name in _STRING_FIELDS}
    name, value = next((n, v) for n, v in values.items() if v is not None and not isinstance(v, str))
    return f"{name} is not a string: {value!r}"[:200]


def _int(value) -> int:
    return value or 0  # validated by response_key: an int or None

