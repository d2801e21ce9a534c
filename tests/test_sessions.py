"""Reading the sessions tree: walking, hashing, streaming JSONL with offsets and skipped lines."""

import os

import pytest

from resources.ingest.session_files import (
    ParseStats,
    compute_file_hash,
    iter_jsonl,
    parse_jsonl,
    tail_fingerprint,
    walk_sessions,
)

pytestmark = pytest.mark.unit


def test_walk_finds_sessions_and_subagents_and_skips_the_rest(tmp_path):
    root = tmp_path / "projects"
    (root / "proj-a" / "sess-1" / "subagents").mkdir(parents=True)
    (root / "proj-a" / "s1.jsonl").write_text("{}\n")
    (root / "proj-a" / "sess-1" / "subagents" / "agent-x.jsonl").write_text("{}\n")
    (root / "proj-a" / "notes.txt").write_text("not a session")
    (root / "stray.jsonl").write_text("{}\n")  # top-level file: not a project
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text("{}\n")
    os.symlink(outside, root / "proj-link")  # a symlinked project pointing out of the root
    os.symlink(outside / "secret.jsonl", root / "proj-a" / "link.jsonl")
    os.mkfifo(root / "proj-a" / "fifo.jsonl")

    found = {f.key: f for f in walk_sessions(root)}

    assert sorted(found) == ["proj-a/s1.jsonl", "proj-a/sess-1/subagents/agent-x.jsonl"]
    assert {f.project for f in found.values()} == {"proj-a"}
    assert found["proj-a/s1.jsonl"].size == 3


def test_walk_of_a_missing_root_is_empty(tmp_path):
    assert list(walk_sessions(tmp_path / "nope")) == []


def test_walk_limited_to_projects(samples_root):
    (samples_root / "other").mkdir()
    (samples_root / "other" / "x.jsonl").write_text("{}\n")
    assert {f.project for f in walk_sessions(samples_root, {"other"})} == {"other"}


def test_parse_skips_and_counts_blank_malformed_binary_and_non_object_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{broken\n\xff\xfe\x00binary\n[1, 2]\n{"b": 2}\n')
    objs, stats = parse_jsonl(path)
    assert objs == [{"a": 1}, {"b": 2}]
    assert stats.blank == 2
    assert stats.malformed_count == 3
    assert [m.byte_offset for m in stats.malformed] == [14, 22, 32]
    assert "binary" in stats.malformed[1].preview


def test_huge_line_is_read_whole(tmp_path):
    path = tmp_path / "s.jsonl"
    big = "x" * (5 << 20)
    path.write_text(f'{{"text": "{big}"}}\n{{"n": 2}}\n')
    objs, stats = parse_jsonl(path)
    assert len(objs[0]["text"]) == 5 << 20 and objs[1] == {"n": 2}
    assert stats.malformed_count == 0


def test_iter_resumes_from_an_offset_and_leaves_a_half_written_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "half')
    stats = ParseStats()
    lines = list(iter_jsonl(path, 0, stats))
    assert [(line.offset, line.obj["n"]) for line in lines] == [(0, 1), (9, 2)]
    assert stats.end_offset == 18 and stats.malformed_count == 0

    with open(path, "ab") as f:
        f.write(b'": true}\n{"n": 4}\n')
    more = ParseStats()
    lines = list(iter_jsonl(path, stats.end_offset, more))
    assert [line.obj["n"] for line in lines] == [3, 4]
    assert more.bytes_read == path.stat().st_size - 18


def test_final_line_without_newline_that_parses_is_consumed(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}')
    stats = ParseStats()
    assert [line.obj["n"] for line in iter_jsonl(path, 0, stats)] == [1, 2]
    assert stats.end_offset == path.stat().st_size


def test_a_final_line_that_is_only_a_valid_prefix_waits_for_the_rest(tmp_path):
    # found by tests/test_properties.py: "1" is valid JSON, but as the last bytes of a growing file it is
    # the start of "10"; consuming it counted one malformed line as two, at the wrong offsets
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{}\n1')
    first = ParseStats()
    assert [line.obj for line in iter_jsonl(path, 0, first)] == [{}]
    assert first.end_offset == 3 and first.malformed_count == 0
    with open(path, "ab") as f:
        f.write(b'0\n')
    rest = ParseStats()
    assert list(iter_jsonl(path, first.end_offset, rest)) == []
    assert [(m.byte_offset, m.length) for m in rest.malformed] == [(3, 3)]


def test_hash_is_content_based(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n')
    b.write_text('{"x": 1}\n')
    assert compute_file_hash(a) == compute_file_hash(b)
    b.write_text('{"x": 2}\n')
    assert compute_file_hash(a) != compute_file_hash(b)


def test_tail_fingerprint_tells_appended_from_rewritten(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"n": 1}\n')
    before = tail_fingerprint(path, 9)
    with open(path, "a") as f:
        f.write('{"n": 2}\n')
    assert tail_fingerprint(path, 9) == before
    path.write_text('{"n": 9}\n{"n": 2}\n')
    assert tail_fingerprint(path, 9) != before
