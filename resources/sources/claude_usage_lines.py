"""Claude Code's usage lines decoded straight into typed objects (msgspec): the usage reader's common case.

`decode` reads a line into a `UsageLine` that holds only what a usage row is made of, checked as
`resources.sources.claude.response_key` checks it: token counts are integers in 0..2^63-1 and so are their sums,
text fields are strings or null, the timestamp is ISO-8601. Every other field (the message's content, most of
a line's bytes) is skipped without becoming a Python object, and the checks run in C: the reader's CPU per
line is about half that of a full orjson parse and the checks on the dict.

A line it cannot take so is parsed by orjson instead, and the reader's dict path decides about it with its own
messages, so which copy of a response wins and which line is malformed stay as they were: a value of another
type, a count or a sum out of range, a bad timestamp, a line that is not JSON, and any line that is not valid
UTF-8 (orjson refuses invalid UTF-8 anywhere in a line; msgspec checks only the fields it decodes, so a line
that is not ASCII is checked first).

One line is read differently: a number beyond a double's range (``1e400``) in a field this does not read. The
JSON grammar allows it and Claude Code (JavaScript's JSON.stringify) never writes it; orjson refuses the whole
line, so the reader before this counted such a line malformed, and now reads its usage.

The best copy of a response becomes its warehouse row as a `Row` (`typed_row`), encoded by msgspec: a dict
per row (`usage_row` over `as_dict`) and orjson's encoding of it cost a worker process about 0.2 s of CPU for
2,000 sessions' 24,000 rows, four times this. It holds what `usage_row` makes of the same line (the property
test in tests/test_properties.py compares the two on generated lines); a timestamp in any other form than
Claude Code's own goes through `usage_row`, which converts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import msgspec
import orjson

from resources.sources.claude import AGENT, MAX_TOKENS, billed_model

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class CacheSplit(msgspec.Struct):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class Usage(msgspec.Struct):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation: CacheSplit | None = None
    speed: str | None = None


class Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: Usage | None = None


class UsageLine(msgspec.Struct):
    """The fields of a transcript line a usage row is made of (`resources.sources.claude.usage_row` reads the
    same names from `as_dict`)."""

    type: str = "assistant"
    message: Message | None = None
    requestId: str | None = None  # noqa: N815 (the transcript's names)
    sessionId: str | None = None  # noqa: N815
    gitBranch: str | None = None  # noqa: N815
    cwd: str | None = None
    agentId: str | None = None  # noqa: N815
    timestamp: str | None = None
    isSidechain: bool = False  # noqa: N815
    costUSD: float | None = None  # noqa: N815


class Row(msgspec.Struct):
    """The warehouse row of a typed line, in the columns' names: what `resources.sources.claude.usage_row` makes
    of the same line's dict, with ``ts`` as the transcript wrote it (`typed_row` takes only a timestamp written
    as Claude Code writes it: UTC, to the millisecond, which the column holds as it is). `json` is the row as the
    staging reads it (`resources.state.store.JsonRows`), encoded in C without a dict per row."""

    dedup_key: str
    message_id: str | None
    request_id: str | None
    ts: str
    session_id: str | None
    session_key: str
    project: str
    model: str | None
    git_branch: str | None
    cwd: str | None
    is_sidechain: bool
    agent_id: str | None
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cache_creation_1h_tokens: int
    cost_usd: float | None
    line_offset: int
    agent: str = AGENT
    extra_output_tokens: int = 0
    reasoning_output_tokens: int = 0

    def json(self) -> bytes:
        return _encode(self)


_decoder = msgspec.json.Decoder(UsageLine)
_encode = msgspec.json.Encoder().encode
_MILLISECOND_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").fullmatch
"""The timestamp Claude Code writes (JavaScript's toISOString); any other form goes through `usage_row`."""


def decode(raw: bytes) -> UsageLine | object:
    """A checked `UsageLine` for ``raw``, or what ``orjson.loads(raw)`` returns (raising as it raises)."""
    return typed_or_parsed(raw, _decoder, _fits)


def typed_or_parsed(raw: bytes, decoder: msgspec.json.Decoder, fits: Callable[[object], bool]) -> object:
    """What ``decoder`` makes of ``raw`` when ``raw`` is valid UTF-8 and decodes and ``fits`` takes the result;
    otherwise what ``orjson.loads(raw)`` returns (raising as it raises): the rule of the typed line readers."""
    if raw.isascii() or _is_utf8(raw):
        try:
            line = decoder.decode(raw)
        except (msgspec.MsgspecError, RecursionError):
            pass
        else:
            if fits(line):
                return line
    return orjson.loads(raw)


def usage_total(line: UsageLine) -> int | None:
    """The token total of a line carrying billable usage (its best-copy rank), None for any other line."""
    message = line.message
    if line.type != "assistant" or message is None or (usage := message.usage) is None:
        return None
    return ((usage.input_tokens or 0) + (usage.output_tokens or 0) + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0))


def typed_row(key: str, line: UsageLine, offset: int, session_key: str, project: str) -> Row | None:
    """The `Row` of a line `decode` returned and `usage_total` counted, or None when its timestamp is in another
    form (then ``usage_row(key, as_dict(line), ...)`` makes the row)."""
    if not _MILLISECOND_UTC(line.timestamp):
        return None
    message = line.message
    usage = message.usage
    split = usage.cache_creation
    return Row(key, message.id, line.requestId, line.timestamp, line.sessionId, session_key, project,
               billed_model(message.model, usage.speed), line.gitBranch or None, line.cwd, line.isSidechain,
               line.agentId, usage.input_tokens or 0, usage.output_tokens or 0, usage.cache_creation_input_tokens or 0,
               usage.cache_read_input_tokens or 0, (split.ephemeral_1h_input_tokens or 0) if split is not None else 0,
               line.costUSD, offset)


def as_dict(line: UsageLine) -> dict:
    """The line as the dict orjson would have made of its fields (absent ones as null)."""
    return msgspec.to_builtins(line)


def _is_utf8(raw: bytes) -> bool:
    """Whether ``raw`` is valid UTF-8 throughout, as orjson requires of a whole line (msgspec checks only the
    strings it decodes)."""
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _fits(line: UsageLine) -> bool:
    """What the types cannot say: the sums fit a BIGINT, the timestamp is ISO-8601 (only for usage lines, as
    `response_key` checks nothing else of a line without billable usage)."""
    total = usage_total(line)
    if total is None:
        return True
    if total > MAX_TOKENS:
        return False
    split = line.message.usage.cache_creation
    if split is not None and (split.ephemeral_5m_input_tokens or 0) + (split.ephemeral_1h_input_tokens or 0) \
            > MAX_TOKENS:
        return False
    try:
        datetime.fromisoformat(line.timestamp)
    except (TypeError, ValueError):
        return False
    return True
