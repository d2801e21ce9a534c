"""Property tests (hypothesis): the JSONL reader and the usage counting rules on generated sessions.

The sessions are generated here from a list of responses (each known by its input, cache and final
output counts), then written the way agents write them: split over several lines sharing message.id
and requestId, output final only on the last, duplicated lines, sidechain copies, progress and user
lines carrying usage that must not count, lines without ``type``, garbage and blank lines. Files grow
at random byte offsets (mid-line too) and are rewritten between ingests; every ingest runs the real
usage processor through the runner (or one file through the statusline's top-up) on a real DuckDB
file, and the stored rows must equal a reference
computed in this file from the generated responses, never from our code.

The profile in conftest.py derandomizes the search (the same examples every run);
``SESSIONLAKE_HYPOTHESIS_PROFILE=explore`` searches at random, ``SESSIONLAKE_PROPERTY_SCALE=10`` runs
ten times the examples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors, top_up_files
from resources.ingest.session_files import ParseStats, iter_jsonl, session_file_at
from resources.state.store import StateStore
from resources.usage.pricing import PriceTable
from resources.usage.reports import usage_report
from tests.property_scale import examples

pytestmark = pytest.mark.unit

PRICES = PriceTable.load()  # loaded once: the runner test builds a processor per ingest


# --------------------------------------------------------------------------------------------------
# iter_jsonl alone: any split of the bytes into appends reads the same lines as one read.

def _json_line():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8))
    obj = st.dictionaries(st.text(max_size=6), scalar, max_size=4)
    return st.one_of(
        obj.map(orjson.dumps),  # the lines agents write
        st.lists(scalar, max_size=3).map(orjson.dumps),  # JSON, but not an object
        scalar.map(orjson.dumps),
        obj.map(lambda o: orjson.dumps(o)[:-1]),  # a writer that died mid-line
        st.binary(max_size=12),  # garbage, invalid UTF-8 included
        st.sampled_from([b"", b"  ", b"\t", b"\r"]),  # blank lines
    ).map(lambda b: b.replace(b"\n", b" "))


def _object_then_more(line: bytes) -> bool:
    """``{}x``: a whole JSON object followed by more bytes on the same line. Read while only ``{}`` was
    written, it is a line (the last line of a file may lack its newline for good); read whole, it is
    malformed. The one case where a split read differs, by design."""
    try:
        orjson.loads(line)
        return False
    except orjson.JSONDecodeError:
        pass
    for end in range(1, len(line)):
        try:
            if type(orjson.loads(line[:end])) is dict:
                return True
        except orjson.JSONDecodeError:
            continue
    return False


@st.composite
def _split_file(draw):
    lines = draw(st.lists(_json_line().filter(lambda line: not _object_then_more(line)), max_size=12))
    data = b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


def _read_all(path: Path, contains: bytes | None) -> tuple[list, list]:
    stats = ParseStats()
    lines = [(line.offset, line.obj) for line in iter_jsonl(path, 0, stats, contains=contains)]
    return lines, [(m.byte_offset, m.length) for m in stats.malformed]


def _read_growing(path: Path, data: bytes, cuts: list[int], contains: bytes | None) -> tuple[list, list]:
    """Append ``data`` in pieces ending at ``cuts`` (then the rest), reading after each append from
    where the previous read stopped, as the runner does with a live file."""
    lines, malformed, offset = [], [], 0
    path.write_bytes(b"")
    written = 0
    for cut in [*cuts, len(data)]:
        with open(path, "ab") as f:
            f.write(data[written:cut])
        written = cut
        stats = ParseStats()
        # offset and object (a line read before its newline was written is one byte shorter: not compared)
        lines.extend((line.offset, line.obj) for line in iter_jsonl(path, offset, stats, contains=contains))
        malformed.extend((m.byte_offset, m.length) for m in stats.malformed)
        assert offset <= stats.end_offset <= cut
        offset = stats.end_offset
    return lines, malformed


@settings(max_examples=examples(400))
@given(_split_file(), st.sampled_from([None, b'"usage"']))
def test_iter_jsonl_reads_the_same_lines_however_the_file_grew(case, contains):
    data, cuts = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        grown = _read_growing(path, data, cuts, contains)
        assert grown == _read_all(path, contains)


# --------------------------------------------------------------------------------------------------
# The usage processor through the runner, on a real DuckDB file.

TS = "2026-01-10T09:15:00.000Z"


@dataclass
class Response:
    """One API response as the API billed it, and how it shows up in the files."""

    message_id: str
    request_id: str | None
    input: int
    cache_creation: int
    cache_read: int
    output: int
    main_chain: bool  # False: only sidechain copies exist (a subagent's response)
    parts: int  # lines the response is written as; output is final only on the last
    sidechain_outputs: list[int] = field(default_factory=list)  # extra sidechain copies (any output)

    @property
    def identity(self) -> tuple[str, str | None]:
        return self.message_id, self.request_id

    def expected(self) -> tuple[int, int, int, int]:
        """What a correct warehouse stores: the main-chain copy's final counts; with no main-chain copy,
        the sidechain copy with the most tokens (copies differ only in output)."""
        output = self.output if self.main_chain else max([self.output, *self.sidechain_outputs])
        return self.input, output, self.cache_creation, self.cache_read


def _usage(r: Response, output: int) -> dict:
    return {"input_tokens": r.input, "output_tokens": output, "cache_creation_input_tokens": r.cache_creation,
            "cache_read_input_tokens": r.cache_read}


def _assistant_line(r: Response, output: int, *, sidechain: bool, typeless: bool) -> dict:
    line = {"type": "assistant", "uuid": f"u-{r.message_id}-{output}", "sessionId": "s", "timestamp": TS,
            "isSidechain": sidechain, "gitBranch": "main",
            "message": {"id": r.message_id, "model": "claude-sonnet-4-20250514", "role": "assistant",
                        "content": [{"type": "text", "text": "x"}], "usage": _usage(r, output)}}
    if r.request_id is not None:
        line["requestId"] = r.request_id
    if typeless:  # older writers omit type (and uuid); such lines still count
        del line["type"], line["uuid"]
    return line


counts = st.integers(0, 50_000)


@st.composite
def _responses(draw) -> list[Response]:
    n = draw(st.integers(1, 6))
    # message ids from a small pool, so two responses may share one with different request ids
    out = []
    seen = set()
    for i in range(n):
        message_id = draw(st.sampled_from(["msg_a", "msg_b", "msg_c", f"msg_{i}"]))
        request_id = draw(st.one_of(st.none(), st.just(f"req_{i}")))
        if (message_id, request_id) in seen:
            continue
        seen.add((message_id, request_id))
        out.append(Response(message_id, request_id, draw(counts), draw(counts), draw(counts),
                            draw(st.integers(1, 50_000)), draw(st.booleans()), draw(st.integers(1, 4)),
                            draw(st.lists(st.integers(0, 90_000), max_size=2))))
    return out


def _noise(i: int) -> st.SearchStrategy[bytes]:
    """Lines that carry no billable usage of their own, some of them made to look as if they did."""
    fake = Response(f"msg_noise_{i}", f"req_noise_{i}", 7, 7, 7, 7, True, 1)
    embedded = _assistant_line(fake, 7, sidechain=False, typeless=False)
    return st.sampled_from([
        {"type": "progress", "timestamp": TS, "data": {"message": embedded}},  # subagent copy inside progress
        {**embedded, "type": "progress"},  # top-level usage, but on a progress line
        {**embedded, "type": "user"},  # usage on a user line
        {"type": "summary", "summary": "s", "leafUuid": "x"},
        {"summary": "typeless, no message"},
        {"type": "assistant", "timestamp": TS, "message": "not an object"},
    ]).map(orjson.dumps) | st.sampled_from([b"", b"   "]) | st.binary(max_size=20).map(
        lambda b: b.replace(b"\n", b"")) | st.integers(5, 200).map(
        lambda n: orjson.dumps(embedded)[:n])  # a writer that died mid-line: never complete


@dataclass
class SessionFile:
    key: str
    lines: list[bytes]
    content: bytes = b""  # what the file holds once fully written
    spans: list[tuple[int, int, tuple | None]] = field(default_factory=list)  # (start, end w/o newline, billed)
    on_disk: int = 0


@st.composite
def _sessions(draw):
    responses = draw(_responses())
    keys = ["-home-me-app/a.jsonl", "-home-me-app/a/subagents/agent-1.jsonl", "-home-me-lib/b.jsonl"]
    files = [SessionFile(k, []) for k in keys[:draw(st.integers(1, 3))]]
    lines: list[tuple[bytes, tuple | None]] = []  # (bytes, (identity, sidechain, output)) for billed lines
    for r in responses:
        typeless = draw(st.booleans())
        for part in range(r.parts):
            output = r.output if part == r.parts - 1 else draw(st.integers(0, r.output))
            obj = _assistant_line(r, output, sidechain=not r.main_chain, typeless=typeless)
            lines.append((orjson.dumps(obj), (r.identity, not r.main_chain, output)))
        for output in r.sidechain_outputs:
            obj = _assistant_line(r, output, sidechain=True, typeless=False)
            lines.append((orjson.dumps(obj), (r.identity, True, output)))
    for dup in draw(st.lists(st.integers(0, len(lines) - 1), max_size=3)):
        lines.append(lines[dup])  # the same line written twice
    for i in range(draw(st.integers(0, 5))):
        lines.append((draw(_noise(i)), None))
    for line in lines:
        files[draw(st.integers(0, len(files) - 1))].lines.append(line)
    for f in files:
        f.lines = draw(st.permutations(f.lines))
    steps = draw(st.lists(st.tuples(st.sampled_from(["grow", "grow", "rewrite", "ingest", "top_up"]),
                                    st.integers(0, len(files) - 1), st.floats(0, 1)), max_size=8))
    return responses, files, steps


def _render(f: SessionFile) -> None:
    content, spans = b"", []
    for data, billed in f.lines:
        spans.append((len(content), len(content) + len(data), billed))
        content += data + b"\n"
    f.content, f.spans = content, spans


def _visible(f: SessionFile) -> list[tuple]:
    """Billed lines a reader can see now: complete, or complete but for the newline (a JSON object)."""
    return [billed for start, end, billed in f.spans if billed is not None and f.on_disk >= end]


def _rank(line: tuple) -> tuple:
    identity, sidechain, output = line
    return (not sidechain, output)


def _reference(seen: dict, responses: list[Response]) -> dict:
    by_identity = {r.identity: r for r in responses}
    return {identity: (r.input, output, r.cache_creation, r.cache_read)
            for identity, (_, output) in seen.items() for r in [by_identity[identity]]}


def _stored(state: StateStore) -> dict:
    with state.connect() as conn:
        rows = conn.execute("""SELECT message_id, request_id, input_tokens, output_tokens, cache_creation_tokens,
                                      cache_read_tokens FROM usage_messages""").fetchall()
    stored = {(m, r): tuple(counts) for m, r, *counts in rows}
    assert len(stored) == len(rows), "one response stored twice"
    return stored


def _write(root: Path, f: SessionFile, upto: int, *, rewrite: bool) -> None:
    path = root / f.key
    path.parent.mkdir(parents=True, exist_ok=True)
    if rewrite or not path.exists():
        path.write_bytes(f.content[:upto])
    else:
        with open(path, "ab") as out:
            out.write(f.content[f.on_disk:upto])
    f.on_disk = upto


@settings(max_examples=examples(30))
@given(_sessions(), st.randoms(use_true_random=False))
def test_usage_totals_equal_the_reference_however_files_grow_and_are_rewritten(case, rng):
    responses, files, steps = case
    for f in files:
        _render(f)
    with tempfile.TemporaryDirectory() as tmp:
        root, state = Path(tmp) / "projects", StateStore(Path(tmp) / "state.duckdb")
        root.mkdir()
        seen: dict = {}  # identity -> best (rank, output) a reader was shown so far

        def ingest(only: SessionFile | None = None) -> None:
            if only is None:
                stats = run_processors([UsageProcessor(PRICES)], root, state)["usage"]
            else:  # what the statusline does for the live session: that one file, the same rules
                with state.connect() as conn:
                    stats = top_up_files(UsageProcessor(PRICES), [session_file_at(root, root / only.key)], conn)
            assert stats["errors"] == 0, stats["error_files"]
            for f in files if only is None else [only]:
                for line in _visible(f):
                    if line[0] not in seen or _rank(line) > seen[line[0]][0]:
                        seen[line[0]] = (_rank(line), line[2])
            assert _stored(state) == _reference(seen, responses)

        for action, index, fraction in steps:
            f = files[index]
            if action == "grow":  # append up to a random byte offset, mid-line included
                _write(root, f, max(f.on_disk, int(len(f.content) * fraction)), rewrite=False)
            elif action == "rewrite":  # same lines, new order, written up to a random point
                f.lines = rng.sample(f.lines, len(f.lines))
                _render(f)
                _write(root, f, int(len(f.content) * fraction), rewrite=True)
            elif action == "top_up":
                if (root / f.key).exists():
                    ingest(only=f)
            else:
                ingest()
        for f in files:
            _write(root, f, len(f.content), rewrite=False)
        ingest()
        # every line is on disk now: the warehouse holds exactly the responses, each counted once
        assert _stored(state) == {r.identity: r.expected() for r in responses}
        with state.connect() as conn:
            totals = usage_report(conn, "daily")["totals"]
        assert (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"],
                totals["cacheReadTokens"]) == tuple(sum(col) for col in zip(*(r.expected() for r in responses),
                                                                          strict=True))
