"""Property tests (hypothesis): Claude Code's typed line readers read what the dict path reads.

The usage and memory readers decode their common lines with msgspec into only the fields they keep
(resources/sources/claude_usage_lines.py, claude_memory_lines.py) and hand any other line to orjson and the
dict path. On generated lines (fields set to any value or left out, ASCII, UTF-8, invalid UTF-8, garbage) and
on a list of edge lines, each reader gives the same items, rows and malformed lines as the same file read with
every line parsed by orjson and taken by the dict path.

The profile in conftest.py derandomizes the search; see tests/property_scale.py for running more examples.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resources.ingest.processors.usage import UsageRows
from resources.ingest.session_files import ParseStats, iter_jsonl
from resources.sources.base import UsageItem
from tests.property_scale import examples

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------------------------------
# Claude Code's usage reader: the typed decoding of its common lines (resources/sources/claude_usage_lines.py)
# changes neither the rows, which copy wins, nor which lines are malformed and why: the same file read with
# every line parsed by orjson and checked on the dict (`response_key`, the reader before it) gives the same.

def _any_value():
    big = st.sampled_from([2**62, 2**63 - 1, 2**63, 2**64, 10**30, -1, 0])
    return st.one_of(st.none(), st.booleans(), st.integers(0, 5000), big, st.floats(allow_nan=False, width=32),
                     st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2), st.just({}))


_FIELDS = (("type",), ("requestId",), ("sessionId",), ("gitBranch",), ("cwd",), ("agentId",), ("isSidechain",),
           ("costUSD",), ("timestamp",), ("message",), ("message", "id"), ("message", "model"), ("message", "usage"),
           ("message", "usage", "input_tokens"), ("message", "usage", "output_tokens"),
           ("message", "usage", "cache_creation_input_tokens"), ("message", "usage", "cache_read_input_tokens"),
           ("message", "usage", "speed"), ("message", "usage", "cache_creation"),
           ("message", "usage", "cache_creation", "ephemeral_1h_input_tokens"))


@st.composite
def _usage_line(draw):
    """A line as Claude Code writes it (a response's copy, a user or progress line), then maybe one of its fields
    set to any value (or left out), and written as JSON, as ASCII or not, or garbage."""
    count = st.integers(0, 5000)
    obj = {"type": draw(st.sampled_from(["assistant", "assistant", "assistant", "user", "progress"])),
           "requestId": draw(st.sampled_from(["r1", "r2"])), "sessionId": "s", "gitBranch": draw(st.sampled_from(
               ["main", "é ü"])), "cwd": "/w", "isSidechain": draw(st.booleans()),
           "timestamp": draw(st.sampled_from(["2025-06-10T13:00:00.000Z", "2025-06-10T13:00:00+05:30", "2025-06-10"])),
           "message": {"id": draw(st.sampled_from(["m1", "m2", "m3"])), "model": "claude-sonnet-4-20250514",
                       "content": draw(st.sampled_from(["hi", "日本", [{"type": "text", "text": "x"}]])),
                       "usage": {"input_tokens": draw(count), "output_tokens": draw(count),
                                 "cache_creation_input_tokens": draw(count), "cache_read_input_tokens": draw(count),
                                 "cache_creation": {"ephemeral_5m_input_tokens": draw(count),
                                                    "ephemeral_1h_input_tokens": draw(count)}}}}
    if draw(st.booleans()):
        obj["agentId"] = "a1"
    if draw(st.booleans()):
        obj["costUSD"] = draw(st.one_of(st.integers(0, 3), st.floats(0, 3)))
    return _spoiled(draw, obj, _FIELDS, b'"usage"')


def _spoiled(draw, obj: dict, fields, garbage_tail: bytes = b"") -> bytes:
    """``obj`` with one or two of ``fields`` (paths of keys) set to anything or removed, written as JSON, as ASCII
    or not, with invalid UTF-8, or garbage (ending ``garbage_tail``)."""
    for _ in range(draw(st.integers(0, 2))):
        *parents, name = draw(st.sampled_from(fields))
        holder = obj
        for parent in parents:
            holder = holder.get(parent) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            value = draw(st.one_of(st.just(KeyError), _any_value()))
            if value is KeyError:
                holder.pop(name, None)
            else:
                holder[name] = value
    how = draw(st.sampled_from(["ascii", "ascii", "utf-8", "invalid utf-8", "garbage"]))
    if how == "garbage":
        return draw(st.binary(max_size=20)) + garbage_tail
    encoded = json.dumps(obj, ensure_ascii=how == "ascii").encode()
    return encoded.replace(b"}", b',"x":"\xff"}', 1) if how == "invalid utf-8" else encoded


def _reference_usage(path, session_key):
    """The reader before the typed decoding: every usage line parsed by orjson and checked on the dict."""
    from resources.sources.claude import MalformedUsage, response_key, usage_row

    stats, best = ParseStats(), {}
    for line in iter_jsonl(path, 0, stats, contains=b'"usage"'):
        try:
            keyed = response_key(line.obj, line.offset, session_key)
        except MalformedUsage as exc:
            stats.reject(line, str(exc))
            continue
        if keyed is not None and (keyed[0] not in best or keyed[1] > best[keyed[0]][0]):
            best[keyed[0]] = (keyed[1], line.offset, line.obj)
    return [(k, r, usage_row(k, o, off, session_key, "p")) for k, (r, off, o) in best.items()], stats


def _staged(key, rank, row) -> tuple:
    """``(key, rank, row)`` with the row as the warehouse takes it in: its JSON line (`UsageRows.of`) read back,
    the timestamp as the instant it names (a typed row keeps the transcript's text, a dict row has a datetime)."""
    rows = UsageRows.of([UsageItem(key, rank, row)])
    columns = orjson.loads(rows.lines[0])
    return key, rank, rows.models[0], {**columns, "ts": datetime.fromisoformat(columns["ts"])}


def _edge(**change) -> bytes:
    """A valid response line with ``change`` applied (``message`` and ``usage`` entries merged into theirs)."""
    obj = {"type": "assistant", "requestId": "r1", "sessionId": "s", "timestamp": "2025-06-10T13:00:00.000Z",
           "message": {"id": "m1", "model": "claude-sonnet-4-20250514",
                       "usage": {"input_tokens": 1, "output_tokens": 2, **change.pop("usage", {})},
                       **change.pop("message", {})}}
    return json.dumps({**obj, **change}).encode()


EDGE_LINES = [  # each beside a valid copy of its response: the copy wins, or the edge line is malformed
    _edge(), _edge(timestamp="soon"), _edge(timestamp=None), _edge(timestamp=20250610),
    _edge(usage={"input_tokens": 2**62, "output_tokens": 2**62}), _edge(usage={"output_tokens": 2**63}),
    _edge(usage={"cache_creation": {"ephemeral_5m_input_tokens": 2**62, "ephemeral_1h_input_tokens": 2**62}}),
    _edge(usage={"input_tokens": True}), _edge(usage={"input_tokens": 1.0}), _edge(usage={"input_tokens": -1}),
    _edge(usage={"cache_creation": [1]}), _edge(usage={"speed": 1}), _edge(usage={"speed": "fast"}),
    _edge(isSidechain="yes"), _edge(isSidechain=None), _edge(costUSD=True), _edge(costUSD=2), _edge(type=None),
    _edge(type="user", usage={"input_tokens": -1}), _edge(message={"model": 42}), _edge(gitBranch=["main"]),
    _edge(message={"id": None}), _edge(requestId=None), _edge().replace(b"}", b',"x":"\xff"}', 1),
    json.dumps({"type": "assistant", "timestamp": "2025-06-10T13:00:00Z", "x": "日本",
                "message": {"id": "m1", "usage": {"input_tokens": 1}}}, ensure_ascii=False).encode(),
    # responses of their own (other keys), each its own row: timestamps in other forms than Claude Code's, fast mode
    *(_edge(requestId=f"r-{n}", timestamp=ts) for n, ts in enumerate(
        ["2025-06-10T13:00:00.123456Z", "2025-06-10T15:00:00.123+02:00", "2025-06-10 13:00:00.123Z",
         "2025-06-10T13:00:00.123", "2025-06-10T13:00:00.999Z"])),
    _edge(requestId="r-fast", usage={"speed": "fast", "cache_creation": {"ephemeral_1h_input_tokens": 5}},
          costUSD=0.5, gitBranch="", cwd="/w", agentId="a1", isSidechain=True),
]


@settings(max_examples=examples(300))
@given(st.lists(_usage_line(), min_size=1, max_size=12))
@example(EDGE_LINES)
def test_typed_usage_lines_read_as_the_dict_path_reads_them(lines):
    from resources.sources.claude import ClaudeSource

    _assert_read_alike(lines, lambda path, stats: [_staged(*item) for item in ClaudeSource.usage(
        path, "p/s.jsonl", "p", 0, stats)], lambda path: _reference_usage(path, "p/s.jsonl"), _staged)


def _assert_read_alike(lines: list[bytes], typed, reference, same=lambda *item: item) -> None:
    """``lines`` as one session file: ``typed(path, stats)`` (the reader) gives what ``reference(path)`` (the dict
    path: its items and stats) gives, each of its items made ``same(*item)``, and counts the same lines."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.jsonl"
        path.write_bytes(b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines))
        stats = ParseStats()
        items = list(typed(path, stats))
        want, want_stats = reference(path)
    assert items == [same(*item) for item in want]
    assert stats.malformed == want_stats.malformed
    assert (stats.lines, stats.end_offset) == (want_stats.lines, want_stats.end_offset)


# --------------------------------------------------------------------------------------------------
# Claude Code's memory reader: the typed decoding of its lines (resources/sources/claude_memory_lines.py) changes
# neither the items (ids, parents, sessions, records, summaries) nor which lines are malformed and why: the same
# file read with every line parsed by orjson and taken by the dict path (`dict_memory_item`) gives the same.

_MEMORY_FIELDS = (("type",), ("uuid",), ("parentUuid",), ("sessionId",), ("isMeta",), ("timestamp",),
                  ("gitBranch",), ("summary",), ("leafUuid",), ("message",), ("message", "role"),
                  ("message", "model"), ("message", "content"))


@st.composite
def _memory_line(draw):
    """A prompt, an answer (text, thinking and tool blocks), a summary or a progress line as Claude Code writes
    them, then maybe a field or a content block set to any value (or left out), written as JSON, as ASCII or
    not, or garbage."""
    kind = draw(st.sampled_from(["user", "assistant", "summary", "progress", None]))
    block = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": st.sampled_from(["a b", " ", "c"])}),
                      st.just({"type": "thinking", "thinking": "t"}),
                      st.just({"type": "tool_result", "content": [{"type": "text", "text": "r"}]}),
                      _any_value())
    content = draw(st.one_of(st.sampled_from(["hi there", "  ", "日本"]), st.lists(block, max_size=3)))
    obj = {"uuid": draw(st.sampled_from(["u1", "u2", "u3"])), "parentUuid": draw(st.sampled_from([None, "u1", "u2"])),
           "sessionId": "s", "gitBranch": draw(st.sampled_from(["main", "", "é"])),
           "timestamp": draw(st.sampled_from(["2025-06-10T13:00:00.000Z", "2025-06-10T13:00:00+05:30", "2025-06-10",
                                              ""])),
           "message": {"role": draw(st.sampled_from(["user", "assistant"])), "model": "claude-sonnet-4-20250514",
                       "content": content}}
    if kind is not None:
        obj["type"] = kind
    if kind == "summary":
        obj.update(summary=draw(st.sampled_from(["a summary", "  "])), leafUuid=draw(st.sampled_from(["u1", "x"])))
    if draw(st.booleans()):
        obj["isMeta"] = draw(st.booleans())
    return _spoiled(draw, obj, _MEMORY_FIELDS)


MEMORY_EDGE_LINES = [  # the dict path reads these without complaint, or counts them malformed
    b'{"type":null,"uuid":"u1","message":{"role":"user","content":"x"}}',
    b'{"type":"user","uuid":5,"parentUuid":[1],"sessionId":3,"message":{"role":"user","content":"x"}}',
    b'{"type":"user","isMeta":null,"timestamp":"0001-01-01T00:00:00+01:00","message":{"role":"user","content":"x"}}',
    b'{"type":"user","timestamp":"soon","message":{"role":"user","content":"x"}}',
    b'{"type":"user","gitBranch":0,"message":{"role":"user","content":"x"}}',
    b'{"message":{"role":"assistant","content":[{"type":"text","text":"a"},"b",{"type":"text","text":5}]}}',
    b'{"type":"assistant","message":{"model":5,"content":[{"type":5},{"type":"text","text":" c "}]}}',
    b'{"type":"summary","summary":5,"leafUuid":"u1"}', b'{"type":"summary","summary":" s ","leafUuid":9}',
    b'{"uuid":"d","uuid":"e","type":"user","message":{"role":"user","content":"dup"}}', b'[1]', b'7', b'',
    b'{"type":"user","message":"text"}', b'{"type":"user","message":{"role":"user","content":5}}',
]


def _reference_memory(path):
    """The reader before the typed decoding: every line parsed by orjson and taken by the dict path."""
    from resources.sources.claude import dict_memory_item

    stats = ParseStats()
    items = [item for line in iter_jsonl(path, 0, stats) if (item := dict_memory_item(line, stats)) is not None]
    return items, stats


@settings(max_examples=examples(300))
@given(st.lists(_memory_line(), min_size=1, max_size=12))
@example(MEMORY_EDGE_LINES)
def test_typed_memory_lines_read_as_the_dict_path_reads_them(lines):
    from resources.sources.base import MemoryItem
    from resources.sources.claude import ClaudeSource

    _assert_read_alike(lines, lambda path, stats: ClaudeSource.memory(path, "p/s.jsonl", "p", 0, stats),
                       _reference_memory, MemoryItem)
