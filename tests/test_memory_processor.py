"""The memory processor through the real runner, on the sample sessions and real Lance/DuckDB files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from resources.ids import stable_id
from resources.ingest.processors.memory import EARLY_INDEX_MAX_COMMITS, MemoryProcessor
from resources.ingest.runner import run_processors
from resources.memory.events import query_events
from resources.memory.lance import LanceStore
from resources.memory.schema import EDGES, ID_INDEX, RECORDS, TEXT_INDEX, edge_id
from resources.state.store import StateStore

pytestmark = pytest.mark.unit

PROJECT = "-Users-chip-dev-ai-music"
PUSH_PROMPT = "ed356c9b-5106-4a60-b082-60e90997ce2b"
PUSH_ANSWER = "71df1268-cc05-4fd5-aa54-3c9f02765515"
PUSH_SESSION = "fed8ce56-bc79-401f-a83e-af084253362f"


def _ingest(store: LanceStore, root, state_path) -> dict:
    return run_processors([MemoryProcessor(store)], root, StateStore(state_path))["memory"]


def test_prompts_and_answers_become_records(tmp_path, samples_root):
    store = LanceStore(tmp_path / "lance")
    stats = _ingest(store, samples_root, tmp_path / "state.duckdb")
    assert stats["errors"] == 0 and stats["processed"] == 4
    assert stats["records_written"] == store.count(RECORDS) == stats["items_extracted"]
    prompt = store.get(PUSH_PROMPT)
    assert prompt["text"] == "push to github"
    assert (prompt["role"], prompt["tier"], prompt["session_id"], prompt["project"]) == (
        "user", "episodic", PUSH_SESSION, PROJECT)
    assert prompt["session_key"] == f"{PROJECT}/{PUSH_SESSION}.jsonl"
    assert prompt["timestamp"] == datetime(2025, 6, 10, 12, 36, 23, 208000, tzinfo=UTC)
    answer = store.get(PUSH_ANSWER)
    assert answer["role"] == "assistant" and answer["model"] == "claude-sonnet-4-20250514"
    assert answer["text"].startswith("I'll help you push to GitHub.")
    texts = store.open_table(RECORDS).to_arrow()["text"].to_pylist()
    assert not any("tool_use_id" in t for t in texts), "tool results are not prompts"
    assert all(t.strip() for t in texts)


def test_reply_to_edges_follow_parent_uuid_to_the_nearest_record(tmp_path, samples_root):
    store = LanceStore(tmp_path / "lance")
    stats = _ingest(store, samples_root, tmp_path / "state.duckdb")
    edges = {e["id"]: e for e in store.open_table(EDGES).to_arrow().to_pylist()}
    assert stats["edges_written"] == len(edges) > 0
    direct = edges[edge_id(PUSH_ANSWER, PUSH_PROMPT, "reply_to")]
    assert direct["edge_type"] == "reply_to"
    record_ids = set(store.open_table(RECORDS).to_arrow()["id"].to_pylist())
    # every edge starts at a record, and (tool lines skipped) lands on a record or a chain root
    assert {e["src"] for e in edges.values()} <= record_ids
    assert sum(e["dst"] in record_ids for e in edges.values()) >= len(edges) - 4


def test_summaries_tag_the_records_of_their_session(tmp_path, samples_root):
    store = LanceStore(tmp_path / "lance")
    stats = _ingest(store, samples_root, tmp_path / "state.duckdb")
    assert stats["summaries_attached"] == 3
    rows = store.open_table(RECORDS).to_arrow().to_pylist()
    by_session: dict[str, set[str]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], set()).update(row["tags"])
    assert by_session["d3ad4cdc-5657-435d-98fa-0035d53e383d"] == {"AI Music Generation: Diverse Embedding Mapping"}
    assert by_session["ba79134d-b6e9-4867-af0c-6941038c9e4b"] == {
        "AI Music Generation from Word Embeddings", "AI Music: Embedding Words into Sound"}
    assert by_session[PUSH_SESSION] == set()


def test_one_commit_per_table_per_run_and_idempotent_reingest(tmp_path, samples_root):
    store = LanceStore(tmp_path / "lance")
    first = _ingest(store, samples_root, tmp_path / "state.duckdb")
    counts = (store.count(RECORDS), store.count(EDGES))
    assert first["lance_versions_added_records"] <= 3  # merge + id index + FTS index
    assert first["lance_versions_added_edges"] == 1
    store.append_provenance_batch([(PUSH_PROMPT, {"cue": "kept"})])
    again = _ingest(store, samples_root, tmp_path / "state.duckdb")
    assert again["processed"] == 0 and again["lance_versions_added_records"] == 0
    # a fresh state forces every file to be read again: same rows, provenance kept
    fresh = _ingest(store, samples_root, tmp_path / "other-state.duckdb")
    assert fresh["processed"] == 4
    assert (store.count(RECORDS), store.count(EDGES)) == counts
    assert fresh["lance_versions_added_records"] <= 2 and fresh["lance_versions_added_edges"] == 1
    assert store.get(PUSH_PROMPT)["provenance"] == [{"cue": "kept"}]
    assert [e["data"]["records_written"] for e in query_events(store, kind="memory_ingest")] == [
        counts[0], counts[0]]


def test_grown_file_adds_only_its_new_lines(tmp_path, samples_root):
    store = LanceStore(tmp_path / "lance")
    state = tmp_path / "state.duckdb"
    _ingest(store, samples_root, state)
    before = store.count(RECORDS)
    path = samples_root / PROJECT / f"{PUSH_SESSION}.jsonl"
    new_lines = [
        {"parentUuid": PUSH_ANSWER, "type": "user", "sessionId": PUSH_SESSION, "uuid": "grown-1",
         "timestamp": "2025-06-11T09:00:00.000Z", "message": {"role": "user", "content": "now tag a release"}},
        {"parentUuid": "grown-1", "type": "user", "sessionId": PUSH_SESSION, "timestamp": "2025-06-11T09:00:01.000Z",
         "message": {"role": "user", "content": [{"type": "text", "text": "with notes please"}]}},
    ]
    appended = b"".join(orjson.dumps(obj) + b"\n" for obj in new_lines)
    offset = path.stat().st_size
    with path.open("ab") as f:
        f.write(appended)
    stats = _ingest(store, samples_root, state)
    assert stats["processed"] == 1 and stats["bytes_read"] == len(appended)
    assert stats["records_written"] == 2
    assert store.count(RECORDS) == before + 2
    assert store.get("grown-1")["text"] == "now tag a release"
    no_uuid = store.get(stable_id(f"{PROJECT}/{PUSH_SESSION}.jsonl", offset + len(orjson.dumps(new_lines[0])) + 1))
    assert no_uuid["text"] == "with notes please"
    edges = {e["id"] for e in store.open_table(EDGES).to_arrow().to_pylist()}
    assert edge_id("grown-1", PUSH_ANSWER, "reply_to") in edges
    assert edge_id(no_uuid["id"], "grown-1", "reply_to") in edges


def test_malformed_lines_skipped_untyped_lines_kept_progress_ignored(tmp_path):
    root = tmp_path / "projects" / "p"
    root.mkdir(parents=True)
    (root / "s.jsonl").write_bytes(
        b'{"type":"user","uuid":"u1","sessionId":"s","message":{"role":"user","content":"hello there"}}\n'
        b"{not json\n"
        b'{"type":"assistant","uuid":"a1","parentUuid":"u1","sessionId":"s",'
        b'"message":{"role":"assistant","content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"hi!"}]}}\n'
        b'{"sessionId":"s","message":{"role":"assistant","content":[{"type":"text","text":"untyped old line"}]}}\n'
        b'{"type":"progress","sessionId":"s","message":{"role":"user","content":"progress copy"}}\n'
    )
    store = LanceStore(tmp_path / "lance")
    stats = _ingest(store, tmp_path / "projects", tmp_path / "state.duckdb")
    assert stats["lines_malformed"] == 1 and stats["errors"] == 0
    assert store.get("a1")["text"] == "hi!"
    texts = sorted(store.open_table(RECORDS).to_arrow()["text"].to_pylist())
    assert texts == ["hello there", "hi!", "untyped old line"]


def test_commits_every_file_give_the_same_records_and_summary_tags_as_one_commit(tmp_path, samples_root):
    """Bounded memory: records are committed every FILES_PER_COMMIT files. A summary whose leaf is in a
    file of a later commit (or of an earlier one) must tag the same session as in a single commit."""
    one = LanceStore(tmp_path / "one")
    run_processors([MemoryProcessor(one)], samples_root, StateStore(tmp_path / "one.duckdb"))
    many = LanceStore(tmp_path / "many")
    per_file = MemoryProcessor(many)
    per_file.commit_every_files = 1
    stats = run_processors([per_file], samples_root, StateStore(tmp_path / "many.duckdb"))["memory"]
    assert stats["commits"] >= 4

    def by_id(store):
        return {r["id"]: (r["text"], r["session_id"], sorted(r["tags"] or [])) for r in store.records_where("TRUE")}

    expected = by_id(one)
    assert any(tags for _, _, tags in expected.values()), "the samples carry summaries"
    assert by_id(many) == expected
    # more commits than EARLY_INDEX_MAX_COMMITS: the run's records are indexed once, after its last commit (one
    # segment per index, nothing left out)
    assert stats["commits"] > EARLY_INDEX_MAX_COMMITS
    table = many.open_table(RECORDS)
    for index in (TEXT_INDEX, ID_INDEX):
        stats = table.index_stats(index)
        assert (stats.num_indices, stats.num_unindexed_rows, stats.num_indexed_rows) == (1, 0, many.count(RECORDS))


def test_the_first_commits_records_are_indexed_while_the_next_commits_are_written(tmp_path, samples_root,
                                                                                   monkeypatch):
    """In a run of at most EARLY_INDEX_MAX_COMMITS commits (here two), the index build takes the first commit's
    records in a thread of its own, and the run's next commits are written meanwhile (a first ingest built its
    whole index after the last commit, on one core); the end of the run waits for it and indexes what the later
    commits added as one more segment. Here the second commit waits until the build has begun, so the test
    fails if the build waits for the commits."""
    import threading

    import resources.memory.lance as lance_store

    monkeypatch.setattr(lance_store, "INDEX_DELTA_ROWS", 1)  # a segment for the later commits' few records
    store = LanceStore(tmp_path / "lance")
    begun, upserts, builds = threading.Event(), [], []
    index, upsert = store.index_new_records, store.upsert_records

    def index_new_records():
        builds.append((threading.current_thread().name, len(upserts)))
        begun.set()
        index()

    def upsert_records(rows, **kw):
        if upserts:
            assert begun.wait(30), "the index build did not begin before the second commit"
        upserts.append(len(rows))
        return upsert(rows, **kw)

    monkeypatch.setattr(store, "index_new_records", index_new_records)
    monkeypatch.setattr(store, "upsert_records", upsert_records)
    memory = MemoryProcessor(store)
    memory.commit_every_files = 2
    stats = run_processors([memory], samples_root, StateStore(tmp_path / "state.duckdb"))["memory"]
    assert stats["errors"] == 0 and 2 <= stats["commits"] <= EARLY_INDEX_MAX_COMMITS
    assert builds[0] == ("sessionlake-memory-index", 1)
    assert [name for name, _ in builds[1:]] == [threading.current_thread().name]  # the rest, at the end
    assert not any(t.name == "sessionlake-memory-index" for t in threading.enumerate())
    text = store.open_table(RECORDS).index_stats(TEXT_INDEX)
    assert (text.num_indices, text.num_unindexed_rows, text.num_indexed_rows) == (2, 0, store.count(RECORDS))


def test_summaries_that_retag_a_stored_session_write_it_in_bounded_batches(tmp_path, samples_root, monkeypatch):
    """A summary whose leaf is nowhere goes to its own session at the end of the run; that session's
    stored records are re-tagged RETAGGED_PER_WRITE at a time (here 2), never all in one batch."""
    import resources.ingest.processors.memory as memory

    store = LanceStore(tmp_path / "lance")
    state = tmp_path / "state.duckdb"
    _ingest(store, samples_root, state)
    stored = [r["id"] for r in store.records_where(f"session_id = '{PUSH_SESSION}'", ["id"])]
    assert len(stored) >= 4
    lines = [{"type": "summary", "summary": "Pushing to GitHub", "leafUuid": "not-in-any-file"},
             {"type": "user", "uuid": "u-late", "sessionId": PUSH_SESSION, "timestamp": "2026-01-02T00:00:00Z",
              "message": {"role": "user", "content": "one more prompt in the push session"}}]
    (samples_root / PROJECT / "late.jsonl").write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    monkeypatch.setattr(memory, "RETAGGED_PER_WRITE", 2)
    writes: list[int] = []
    upsert = store.upsert_records
    monkeypatch.setattr(store, "upsert_records", lambda rows, **kw: writes.append(len(rows)) or upsert(rows, **kw))
    stats = _ingest(store, samples_root, state)
    assert stats["errors"] == 0 and stats["summaries_attached"] == 1
    assert max(writes) <= 2 and sum(writes) >= len(stored) + 1  # every record re-tagged, two per commit
    tags = {r["id"]: r["tags"] for r in store.records_where(f"session_id = '{PUSH_SESSION}'", ["id", "tags"])}
    assert set(tags) >= {*stored, "u-late"}
    assert all(t == ["Pushing to GitHub"] for t in tags.values()), tags


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # imported by an earlier test; the worker only parses
def test_memory_read_ahead_in_a_worker_stores_what_a_read_in_this_process_stores(tmp_path, samples_root, monkeypatch):
    """Run after usage, memory's files are read ahead in a worker process (chunk by chunk, here two files a
    chunk, committed every two) and taken in a thread beside usage; its records, edges, summary tags, marks
    and malformed lines are those of memory run alone."""
    import threading

    from resources.ingest import runner
    from resources.ingest.processors.usage import UsageProcessor

    (samples_root / PROJECT / "bad.jsonl").write_bytes(
        b'{"type":"user","uuid":"b1","sessionId":"sb","message":{"role":"user","content":"kept"}}\n{not json\n')
    monkeypatch.setattr(runner, "READ_AHEAD_MIN_BYTES", 0)
    monkeypatch.setattr(runner, "FILES_PER_CONNECTION", 2)
    started = []
    start = runner._start_read_ahead
    monkeypatch.setattr(runner, "_start_read_ahead", lambda *a: started.append(sorted(reads := start(*a))) or reads)
    alone, ahead = LanceStore(tmp_path / "alone"), LanceStore(tmp_path / "ahead")
    alone_state, ahead_state = StateStore(tmp_path / "alone.duckdb"), StateStore(tmp_path / "ahead.duckdb")
    run_processors([MemoryProcessor(alone)], samples_root, alone_state)
    memory = MemoryProcessor(ahead)
    memory.commit_every_files = 2
    threads = set()
    take = memory.take
    monkeypatch.setattr(memory, "take", lambda read: threads.add(threading.current_thread().name) or take(read))
    stats = run_processors([UsageProcessor(), memory], samples_root, ahead_state)["memory"]
    assert started == [[], ["memory"]]  # alone, nothing runs before it; after usage, it is read ahead
    assert threads == {"sessionlake-memory"}  # and taken and committed in a thread beside usage
    assert stats["errors"] == 0 and stats["lines_malformed"] == 1 and stats["commits"] >= 2

    expected = _stored(alone, alone_state)
    assert any(r["tags"] for r in expected[0].values()), "the samples carry summaries"
    assert _stored(ahead, ahead_state) == expected
    # more than READ_AHEAD_MAX_BYTES to read: memory reads in its turn, in this process
    monkeypatch.setattr(runner, "READ_AHEAD_MAX_BYTES", 1)
    run_processors([UsageProcessor(), MemoryProcessor(LanceStore(tmp_path / "big"))], samples_root,
                   StateStore(tmp_path / "big.duckdb"))
    assert started[-1] == []


def test_records_a_worker_sends_are_the_records_read_here(tmp_path, samples_root):
    """A worker process sends memory's records, edges and line sessions as Arrow tables of its batch
    (`for_sending`), the run takes them beside files it reads itself; either way a commit writes the same
    records, edges and summary tags, and an id read twice (a session copied into another project) keeps its
    last record."""
    import pickle
    import shutil

    from resources.ingest.parallel_reads import read_files
    from resources.ingest.processors.memory import Span

    copy = samples_root / "-Users-chip-dev-copy"
    copy.mkdir()
    shutil.copy(samples_root / PROJECT / f"{PUSH_SESSION}.jsonl", copy / "fz-copied.jsonl")
    (copy / "bad.jsonl").write_bytes(b'{"type":"user","uuid":"b1","sessionId":"sb","timestamp":"then",'
                                     b'"message":{"role":"user","content":"x"}}\n{not json\n')
    leaf = [{"type": "assistant", "uuid": "tool-line", "sessionId": "s-leaf", "timestamp": "2025-06-01T00:00:00Z",
             "message": {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}},
            {"type": "user", "uuid": "leaf-prompt", "parentUuid": "tool-line", "sessionId": "s-leaf",
             "timestamp": "2025-06-01T00:00:01Z", "message": {"role": "user", "content": "a prompt"}}]
    (copy / "leaf.jsonl").write_bytes(b"\n".join(orjson.dumps(line) for line in leaf) + b"\n")
    (copy / "a-summary.jsonl").write_bytes(orjson.dumps({"type": "summary", "summary": "Found by its tool line",
                                                         "leafUuid": "tool-line"}) + b"\n")
    files = sorted(samples_root.rglob("*.jsonl"), key=lambda path: path.name)  # the copy between the samples
    args = [(str(path), path.parent.name, f"{path.parent.name}/{path.name}", 0, path.stat().st_size, False)
            for path in files]
    sent = pickle.loads(pickle.dumps(read_files(MemoryProcessor, args), protocol=pickle.HIGHEST_PROTOCOL))
    assert all(isinstance(read.value[0].records, Span) for read in sent)

    def committed(name: str, from_worker) -> tuple:
        store = LanceStore(tmp_path / name)
        memory = MemoryProcessor(store)
        memory.begin_run()
        results = []
        for n, (read, (path, project, key, *_)) in enumerate(zip(sent, args, strict=True)):
            if from_worker(n):
                memory.take(read.value[0])
                results.append(read.value[1])
            else:
                results.append(memory.process_session(Path(path), project, key, None))
        memory.commit(None)
        stats = memory.end_run()
        records = {r.pop("id"): r for r in store.records_where("TRUE")}
        for r in records.values():
            del r["created_at"], r["updated_at"]
        edges = sorted((e["id"], e["src"], e["dst"], e["edge_type"], e["weight"])
                       for e in store.dataset(EDGES).to_table().to_pylist())
        counts = {k: stats[k] for k in ("records_written", "edges_written", "summaries_attached")}
        return records, edges, counts, [(r.items_count, r.end_offset, r.malformed) for r in results]

    here = committed("here", lambda n: False)
    assert here[0][PUSH_PROMPT]["project"] == "-Users-chip-dev-copy", "the copy comes after its original"
    assert here[0]["leaf-prompt"]["tags"] == ["Found by its tool line"], "a summary's leaf is any line of a file"
    assert sum(len(malformed) for *_, malformed in here[3]) == 2
    assert committed("worker", lambda n: True) == here
    assert committed("mixed", lambda n: n % 2 == 0) == here
    assert committed("copies", lambda n: "copy" in args[n][1]) == here  # the original read here, its copy sent


def _stored(store: LanceStore, state: StateStore):
    """Records (but write times), edges, memory's marks and the malformed lines, to compare two runs."""
    from resources.state.store import load_processor_state

    records = {r.pop("id"): r for r in store.records_where("TRUE")}
    for r in records.values():
        del r["created_at"], r["updated_at"]
    edges = sorted((e["src"], e["dst"]) for e in store.dataset(EDGES).to_table().to_pylist())
    with state.connect() as conn:
        marks = {k: (m.items_extracted, m.file_hash, m.byte_offset, m.tail_hash)
                 for k, m in load_processor_state(conn, "memory").items()}
        malformed = conn.execute("SELECT session_key, byte_offset, error FROM malformed_lines").fetchall()
    return records, edges, marks, malformed


def _worker_dies(*args):
    os._exit(9)  # as a worker the kernel killed


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_a_read_ahead_worker_that_dies_leaves_the_reading_to_this_process(tmp_path, samples_root, monkeypatch,
                                                                         caplog):
    from resources.ingest import parallel_reads, runner
    from resources.ingest.processors.usage import UsageProcessor

    monkeypatch.setattr(runner, "READ_AHEAD_MIN_BYTES", 0)
    monkeypatch.setattr(parallel_reads, "read_files", _worker_dies)
    alone, ahead = LanceStore(tmp_path / "alone"), LanceStore(tmp_path / "ahead")
    alone_state, ahead_state = StateStore(tmp_path / "alone.duckdb"), StateStore(tmp_path / "ahead.duckdb")
    run_processors([MemoryProcessor(alone)], samples_root, alone_state)
    with caplog.at_level("WARNING"):
        stats = run_processors([UsageProcessor(), MemoryProcessor(ahead)], samples_root, ahead_state)["memory"]
    assert stats["errors"] == 0 and stats["processed"] == stats["scanned"] > 0
    assert any("worker process reading files ended" in r.getMessage() for r in caplog.records)
    assert _stored(ahead, ahead_state) == _stored(alone, alone_state)
