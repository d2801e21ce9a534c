"""Recall over the ingested sample sessions: ranking, filters, provenance (sync and queued), CLI, hybrid."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import numpy as np
import pytest
from lancedb.embeddings import TextEmbeddingFunction, register

from pipelines.cli.main import main
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from resources.memory.recall import recall, snippet
from resources.memory.schema import PROVENANCE, RECORDS, TEXT_INDEX, VECTOR_COLUMN, new_record
from resources.state.store import StateStore

pytestmark = pytest.mark.unit

PROJECT = "-Users-chip-dev-ai-music"
DIVERSE_PROMPT = "f8ccf7b6-1e89-424a-8441-dd1d73975f5e"
CONDA_PROMPT = "82bdb80d-0de0-4260-ad7e-4d844f73618f"
PUSH_PROMPT = "ed356c9b-5106-4a60-b082-60e90997ce2b"


@register("sessionlake-test-hashing")
class HashingEmbeddings(TextEmbeddingFunction):
    """A deterministic bag-of-words embedder, so hybrid recall is tested without downloading a model."""

    dims: int = 64

    def ndims(self) -> int:
        return self.dims

    def generate_embeddings(self, texts):
        out = []
        for text in texts:
            vec = np.zeros(self.dims, dtype=np.float32)
            for word in str(text).lower().split():
                vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dims] += 1.0
            norm = np.linalg.norm(vec)
            out.append(vec / norm if norm else vec)
        return out


def _ingested(tmp_path, samples_root, **store_kw) -> LanceStore:
    store = LanceStore(tmp_path / "home" / "lance", **store_kw)
    stats = run_processors([MemoryProcessor(store)], samples_root, StateStore(tmp_path / "state.duckdb"))
    assert stats["memory"]["errors"] == 0
    return store


@pytest.fixture
def store(tmp_path, samples_root) -> LanceStore:
    return _ingested(tmp_path, samples_root)


def test_a_phrase_from_one_prompt_ranks_that_prompt_first(store):
    assert recall(store, "embeddings have more diverse values", "s1", k=5)[0]["id"] == DIVERSE_PROMPT
    hits = recall(store, "which conda environment am i in", "s1", k=5)
    assert hits[0]["id"] == CONDA_PROMPT
    assert hits[0]["project"] == PROJECT and hits[0]["role"] == "user"
    assert all(h["score"] is not None for h in hits)
    assert len(recall(store, "music", "s1", k=3)) == 3


def test_filters_by_project_and_since(store):
    assert recall(store, "push to github", "s1", project="another-project") == []
    assert recall(store, "push to github", "s1", project=PROJECT)[0]["id"] == PUSH_PROMPT
    late = recall(store, "conda", "s1", k=50, since="2025-06-10")
    assert late == []  # every conda mention is on 8 June
    assert recall(store, "push to github", "s1", since="2025-06-10T00:00:00Z")[0]["id"] == PUSH_PROMPT
    assert recall(store, "   ", "s1") == [] and recall(store, "conda", "s1", k=0) == []


def test_sync_provenance_lands_before_recall_returns(store):
    records, version = store.version(RECORDS), store.version(PROVENANCE)
    hits = recall(store, "push to github", "session-A", k=2)
    assert store.version(PROVENANCE) == version + 1  # one append for all hits
    assert store.version(RECORDS) == records
    for hit in hits:
        prov = store.get(hit["id"])["provenance"]
        assert [(e["cue"], e["session_id"]) for e in prov] == [("push to github", "session-A")]
        assert prov[0]["ts"]
    recall(store, "push to github", "session-B", k=1)
    assert [e["session_id"] for e in store.get(hits[0]["id"])["provenance"]] == ["session-A", "session-B"]
    assert "provenance" not in recall(store, "push to github", "session-C", k=1)[0]


def test_queued_recall_returns_before_a_slow_write_finishes(store, tmp_path):
    real = store.append_provenance_batch
    release, written = threading.Event(), threading.Event()

    def held(pairs, *args, **kwargs):  # the write waits for the test: a recall that waited for it would hang
        release.wait(60)
        result = real(pairs, *args, **kwargs)
        written.set()
        return result

    store.append_provenance_batch = held
    store.enable_provenance_queue(coalesce_ms=10, overflow_dir=tmp_path / "overflow")
    try:
        hits = recall(store, "push to github", "session-Q", k=3)
        assert not written.is_set(), "recall returned only after its provenance write"
        assert hits and store.get(hits[0]["id"])["provenance"] == []
        release.set()
        assert store.provenance_queue.flush(timeout=30) and written.is_set()
        assert store.get(hits[0]["id"])["provenance"][0]["session_id"] == "session-Q"
    finally:
        store.disable_provenance_queue()
    assert store.provenance_queue is None


def test_queued_recalls_add_at_most_one_version_per_coalesce_window(store, tmp_path):
    queue = store.enable_provenance_queue(coalesce_ms=200, overflow_dir=tmp_path / "overflow")
    records, version = store.version(RECORDS), store.version(PROVENANCE)
    started = time.perf_counter()
    for i in range(60):
        recall(store, ("music", "conda", "github")[i % 3], f"s{i}", k=3)
    assert queue.flush(timeout=30)
    elapsed = time.perf_counter() - started
    store.disable_provenance_queue()
    added = store.version(PROVENANCE) - version
    batches = queue.stats["batches"]
    # every window but the last (cut short by flush) lasted the full 200 ms
    assert batches >= 1
    assert batches <= elapsed / 0.2 + 1
    # exactly one append per window, and nothing at all on records
    assert added == batches
    assert store.version(RECORDS) == records
    assert queue.stats["written"] == 180


def test_a_record_written_a_moment_ago_is_recalled_before_the_index_catches_up(store):
    indexed = recall(store, "push to github", "s1", k=5)
    store.upsert_records([
        new_record("fresh-1", "walrus notes: please push to github tonight", tier="capture", project=PROJECT),
        new_record("fresh-2", "github walrus push, later, to somewhere", tier="capture", project=PROJECT),
    ])
    stats = store.open_table(RECORDS).index_stats(TEXT_INDEX)
    assert stats.num_unindexed_rows == 2  # the index has not caught up
    assert [h["id"] for h in recall(store, "walrus", "s1", k=5)] in (["fresh-1", "fresh-2"], ["fresh-2", "fresh-1"])
    hits = recall(store, "push to github", "s1", k=10, project=PROJECT)
    ids = [h["id"] for h in hits]
    # exact-phrase hits first (indexed or not), the word-only match after them, and the
    # indexed hits keep their order and scores
    assert "fresh-1" in ids and "fresh-2" in ids and ids.index("fresh-2") > ids.index(PUSH_PROMPT)
    phrase = [h["id"] for h in hits if "push to github" in " ".join(h["text"].lower().split())]
    assert ids[: len(phrase)] == phrase
    old = [(h["id"], h["score"]) for h in hits if h["id"] in {i["id"] for i in indexed}]
    assert old == [(h["id"], h["score"]) for h in indexed][: len(old)]


def test_snippet_highlights_cue_words():
    text = "Long preamble " * 30 + "then we push the branch to GitHub and tag it"
    out = snippet(text, "push github", width=60, mark=("<", ">"))
    assert "<push>" in out and "<GitHub>" in out and out.startswith("…")
    assert snippet("short", "", width=10) == "short"


def test_cli_recall_json_and_text(tmp_path, samples_root, monkeypatch, capsys):
    _ingested(tmp_path, samples_root)
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    assert main(["recall", "which conda environment am i in", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == CONDA_PROMPT and hits[0]["rank"] == 1 and len(hits) == 3
    assert "**conda**" in hits[0]["snippet"] and hits[0]["project"] == PROJECT
    assert main(["recall", "push to github", f"--project={PROJECT}", "--since", "2025-06-10"]) == 0
    out = capsys.readouterr().out
    assert " 1. " in out and "fed8ce56" in out and "2025-06-10 12:36" in out and "**push**" in out
    store = LanceStore(tmp_path / "home" / "lance")
    assert store.get(PUSH_PROMPT)["provenance"][0]["session_id"] == "cli"
    with pytest.raises(SystemExit):
        main(["recall", "x", "--since", "yesterday"])
    assert "is not a time: use 30m, 3h, 7d" in capsys.readouterr().err


def test_cli_recall_without_memory_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "empty"))
    assert main(["recall", "anything"]) == 1
    assert "sessionlake ingest" in capsys.readouterr().err


def test_no_embedder_means_no_vectors(store):
    assert store.embedding is None
    assert VECTOR_COLUMN not in store.open_table(RECORDS).schema.names


def test_hybrid_recall_with_a_registered_embedder(tmp_path, samples_root):
    store = _ingested(tmp_path, samples_root, embedder="sessionlake-test-hashing")
    table = store.open_table(RECORDS)
    assert VECTOR_COLUMN in table.schema.names
    vectors = table.to_arrow()[VECTOR_COLUMN].to_pylist()
    assert all(v is not None and len(v) == 64 for v in vectors)
    assert recall(store, "which conda environment am i in", "h1", k=3)[0]["id"] == CONDA_PROMPT
    cue_vec = HashingEmbeddings().generate_embeddings(["push to github"])[0]
    assert recall(store, "push to github", "h1", k=3, cue_embedding=cue_vec)[0]["id"] == PUSH_PROMPT
    store.upsert_records([new_record("late", "a brand new walrus prompt", tier="capture")])
    assert store.get("late") is not None
    assert len(store.open_table(RECORDS).search().where("id = 'late'").to_list()[0][VECTOR_COLUMN]) == 64
    with pytest.raises(ValueError, match="embedding-registry"):
        LanceStore(tmp_path / "x", embedder="no-such-embedder")
