"""Claude Code's transcript lines decoded straight into typed objects (msgspec): the memory reader's common case.

`decode` reads a line into a `MemoryLine` that holds only what a memory item is made of: the ids that thread
the conversation, the session, the time, the model, the branch, and the text blocks of the message. Every
other field (tool calls and their results, thinking blocks, most of a line's bytes) is skipped without
becoming a Python object. `memory_item` then makes the same `MemoryItem` that
`resources.sources.claude.ClaudeSource.memory` makes of the dict orjson would have read.

A line it cannot take so is parsed by orjson instead, and the reader's dict path decides about it with its
own messages, so what counts as a record and which line is malformed stay as they were: a field of another
type than the dict path reads without complaint (a number where an id is, a text block whose text is not a
string), a timestamp that is not ISO-8601, a line that is not JSON, and any line that is not valid UTF-8
(orjson refuses invalid UTF-8 anywhere in a line; msgspec checks only the fields it decodes, so a line that is
not ASCII is checked first, as the usage reader checks it). The one exception is the usage reader's
(`resources.sources.claude_usage_lines`): a number beyond a double's range in a field this does not read,
which orjson refuses and this reads.
"""

from __future__ import annotations

import msgspec

from resources.sources.base import MemoryItem
from resources.sources.claude_usage_lines import typed_or_parsed
from resources.times import as_utc


class Block(msgspec.Struct):
    type: str | None = None
    text: str | None = None


class Message(msgspec.Struct):
    role: str | None = None
    model: str | None = None
    content: str | list[Block] | None = None


class MemoryLine(msgspec.Struct):
    """The fields of a transcript line a memory item is made of (`resources.sources.claude.line_text` and
    `record_fields` read the same names from the dict). ``timestamp`` holds the UTC time once `decode` has
    checked it."""

    type: str | msgspec.UnsetType = msgspec.UNSET
    """Absent is not null here: the dict path takes the message's role only when the key is absent."""
    uuid: str | None = None
    parentUuid: str | None = None  # noqa: N815 (the transcript's names)
    sessionId: str | None = None  # noqa: N815
    isMeta: bool = False  # noqa: N815
    timestamp: object = None
    gitBranch: str | None = None  # noqa: N815
    message: Message | None = None
    summary: str | None = None
    leafUuid: str | None = None  # noqa: N815


_decoder = msgspec.json.Decoder(MemoryLine)


def decode(raw: bytes) -> MemoryLine | object:
    """A checked `MemoryLine` for ``raw``, or what ``orjson.loads(raw)`` returns (raising as it raises)."""
    return typed_or_parsed(raw, _decoder, _timed)


def _timed(line: MemoryLine) -> bool:
    """Whether ``line``'s timestamp is null or an ISO-8601 string, which it then holds as UTC; otherwise the dict
    path says why the line is malformed."""
    if line.timestamp is not None and line.timestamp.__class__ is not str:
        return False
    try:
        line.timestamp = as_utc(line.timestamp)
    except (ValueError, OverflowError):
        return False
    return True


def memory_item(line: MemoryLine, offset: int) -> MemoryItem | None:
    """The `MemoryItem` of ``line`` (starting at ``offset``), as the dict path makes it; None for a summary
    line without text."""
    if line.type == "summary":
        text = (line.summary or "").strip()
        return MemoryItem(offset, summary=(line.leafUuid, text)) if text else None
    record = None
    message = line.message
    if message is not None and not line.isMeta:
        kind = message.role if line.type is msgspec.UNSET else line.type
        content = message.content
        if kind in ("user", "assistant") and content is not None:
            if content.__class__ is str:
                text = content if kind == "user" else ""
            else:
                text = "\n\n".join(b.text for b in content if b.type == "text" and b.text is not None)
            text = text.strip()
            if text:
                record = {"role": kind, "text": text, "session_id": line.sessionId, "timestamp": line.timestamp,
                          "model": message.model, "git_branch": line.gitBranch or None}
    return MemoryItem(offset, line.uuid, line.parentUuid, line.sessionId, record)
