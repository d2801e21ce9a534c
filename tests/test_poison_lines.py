"""One bad value costs one line: it is counted and kept in ``malformed_lines``, every other row is written."""

import json
import os
import subprocess
import sys

import duckdb
import pytest

from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from resources.memory.schema import RECORDS
from tests.test_usage import SAMPLE_TOTALS, _assistant, _totals

pytestmark = pytest.mark.integration

TS = "2025-06-10T13:00:00.000Z"


def _usage_line(msg_id, **usage):
    line = _assistant(msg_id, f"r-{msg_id}", TS, 1)
    line["message"]["usage"].update(usage)
    return line


POISON = {
    "2^63": _usage_line("m-2p63", output_tokens=2**63),
    "10^30": _usage_line("m-1e30", input_tokens=10**30),
    "negative": _usage_line("m-neg", cache_read_input_tokens=-5),
    "string": _usage_line("m-str", output_tokens="12"),
    "float": _usage_line("m-float", input_tokens=1.5),
    "bool": _usage_line("m-bool", output_tokens=True),
    "sum beyond int64": _usage_line("m-sum", input_tokens=2**62, output_tokens=2**62),
    "1h split": _usage_line("m-split", cache_creation={"ephemeral_1h_input_tokens": 2**64 - 1}),
    "bad time": _assistant("m-time", "r-time", "not-a-time", 1),
    "model not a string": _assistant("m-model", "r-model", TS, 1, model=42),
}


def _write(path, *objs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for obj in objs:  # the json module, since orjson refuses to write integers beyond 64 bits
            f.write(json.dumps(obj) + "\n")


def _malformed(state):
    with state.connect() as conn:
        return conn.execute("SELECT session_key, byte_offset, error, preview FROM malformed_lines "
                            "ORDER BY session_key, byte_offset").fetchall()


def test_out_of_range_and_mistyped_usage_make_only_their_line_malformed(samples_root, state):
    poisoned = samples_root / "-p-poison" / "s.jsonl"
    _write(poisoned, _assistant("m-good", "r-good", TS, 40), *POISON.values(),
           _assistant("m-late", "r-late", TS, 2))  # after the bad lines: still read
    # a bad copy of a good response never beats the good one, whatever its size
    _write(poisoned, {**_usage_line("m-good", output_tokens=2**70)})
    stats = run_processors([UsageProcessor()], samples_root, state)["usage"]
    assert stats["errors"] == 0 and stats["processed"] == 5
    assert stats["lines_malformed"] == len(POISON) + 1
    with state.connect() as conn:
        rows = conn.execute("SELECT dedup_key, output_tokens FROM usage_messages WHERE project = '-p-poison' "
                            "ORDER BY 1").fetchall()
    assert rows == [("m-good:r-good", 40), ("m-late:r-late", 2)]
    kept = _malformed(state)
    assert len(kept) == len(POISON) + 1 and {k for k, *_ in kept} == {"-p-poison/s.jsonl"}
    errors = [e for _, _, e, _ in kept]
    assert "usage.output_tokens is not a token count (an integer 0..2^63-1): 9223372036854775808" in errors
    assert any("timestamp is not an ISO-8601 time: 'not-a-time'" in e for e in errors)
    assert any("message.model is not a string: 42" in e for e in errors)
    assert all(preview.startswith('{"type":"assistant","uuid":"u-m-') for *_, preview in kept)
    totals = _totals(state)
    assert totals["outputTokens"] == SAMPLE_TOTALS["outputTokens"] + 42  # the samples lose nothing
    again = run_processors([UsageProcessor()], samples_root, state)["usage"]
    assert again["processed"] == 0 and again["errors"] == 0


def test_memory_keeps_the_file_when_one_line_has_a_bad_timestamp(tmp_path, state):
    root = tmp_path / "tree"
    _write(root / "p" / "s.jsonl",
           {"type": "user", "uuid": "u1", "sessionId": "s", "timestamp": TS,
            "message": {"role": "user", "content": "first prompt"}},
           {"type": "user", "uuid": "u2", "parentUuid": "u1", "sessionId": "s", "timestamp": "not-a-time",
            "message": {"role": "user", "content": "prompt with a broken time"}},
           {"type": "user", "uuid": "u3", "parentUuid": "u2", "sessionId": ["s"], "timestamp": TS,
            "message": {"role": "user", "content": "prompt with a list for a session id"}},
           {"type": "user", "uuid": "u4", "parentUuid": "u3", "sessionId": "s",
            "timestamp": "0001-01-01T00:00:00+14:00",
            "message": {"role": "user", "content": "before year 1 in UTC"}},
           {"type": "assistant", "uuid": "a1", "parentUuid": "u4", "sessionId": "s", "timestamp": TS,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "the answer"}]}})
    _write(root / "q" / "t.jsonl", {"type": "user", "uuid": "q1", "sessionId": "t", "timestamp": TS,
                                    "message": {"role": "user", "content": "another project"}})
    store = LanceStore(tmp_path / "lance")
    stats = run_processors([MemoryProcessor(store)], root, state)["memory"]
    assert stats["errors"] == 0 and stats["processed"] == 2 and stats["lines_malformed"] == 3
    texts = sorted(store.open_table(RECORDS).to_arrow()["text"].to_pylist())
    assert texts == ["another project", "first prompt", "the answer"]
    assert [e for _, _, e, _ in _malformed(state)] == ["timestamp is not an ISO-8601 time: 'not-a-time'",
                                                       "session_id is not a string: ['s']",
                                                       "timestamp is not an ISO-8601 time: '0001-01-01T00:00:00+14:00'"]
    assert run_processors([MemoryProcessor(store)], root, state)["memory"]["processed"] == 0


def test_cli_ingest_with_a_count_of_2_63_keeps_every_other_row(settings, tmp_path):
    _write(settings.sessions_dir / "-p-poison" / "s.jsonl", _assistant("m-good", "r-good", TS, 40),
           _usage_line("m-bad", output_tokens=2**63))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    cli = [sys.executable, "-m", "pipelines.cli.main"]
    run = subprocess.run([*cli, "ingest", "--only", "usage", "--json"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    usage = json.loads(run.stdout)["assets"]["usage_messages"]
    assert (usage["files_processed"], usage["files_failed"], usage["lines_malformed"]) == (5, 0, 1)
    report = subprocess.run([*cli, "usage", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(report.stdout)["totals"]["outputTokens"] == SAMPLE_TOTALS["outputTokens"] + 40
    with duckdb.connect(str(settings.state_path), read_only=True) as conn:
        [(error,)] = conn.execute("SELECT error FROM malformed_lines").fetchall()
    assert error.startswith("usage.output_tokens is not a token count")
