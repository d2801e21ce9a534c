"""The reading workers (resources/ingest/parallel_reads.py): what a worker process computes once, and the pipe its
reads come back through."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_a_worker_hashes_a_file_once_for_two_processors_and_again_once_it_changed(tmp_path, monkeypatch):
    """`read_files` in one process for memory, then usage (what the prefetch's worker does): the second read
    reuses the hash and tail fingerprint; a file rewritten since (new mtime) is hashed again."""
    import resources.ingest.parallel_reads as parallel_reads
    from resources.ingest.processors.memory import MemoryProcessor
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.session_files import compute_file_hash, tail_fingerprint

    path = tmp_path / "p" / "s.jsonl"
    path.parent.mkdir()
    line = b'{"type":"user","uuid":"u1","sessionId":"s","message":{"role":"user","content":"%s"}}\n'
    path.write_bytes(line % b"first" * 200)
    args = [(str(path), "p", "p/s.jsonl", 0, path.stat().st_size, True)]
    hashed = []
    monkeypatch.setattr(parallel_reads, "compute_file_hash",
                        lambda p, size: hashed.append(p) or compute_file_hash(p, size))

    memory, usage = (parallel_reads.read_files(t, args)[0] for t in (MemoryProcessor, UsageProcessor))
    assert len(hashed) == 1
    assert memory.file_hash == usage.file_hash == compute_file_hash(path)
    assert memory.tail == usage.tail == tail_fingerprint(path, path.stat().st_size)
    before = path.stat().st_mtime_ns
    path.write_bytes(line % b"other" * 200)  # same size, new content, a later mtime
    os.utime(path, ns=(before + 10**9, before + 10**9))
    again = parallel_reads.read_files(UsageProcessor, args)[0]
    assert len(hashed) == 2
    assert again.file_hash == compute_file_hash(path) != memory.file_hash
    assert again.tail == tail_fingerprint(path, path.stat().st_size) != memory.tail


@pytest.mark.skipif(sys.platform != "linux", reason="a pipe's capacity is set on Linux only")
def test_the_reading_workers_send_their_reads_through_a_wide_pipe(samples_root):
    import fcntl

    from resources.ingest.parallel_reads import RESULT_PIPE_BYTES, fork_pool, read_files, result_pipe_bytes
    from resources.ingest.processors.memory import MemoryProcessor

    cap = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert result_pipe_bytes() == min(RESULT_PIPE_BYTES, cap) > 64 * 1024  # wider than Linux's default pipe
    path = next(samples_root.rglob("*.jsonl"))
    pool = fork_pool(1)
    try:
        F_GETPIPE_SZ = 1032
        assert fcntl.fcntl(pool._result_queue._reader.fileno(), F_GETPIPE_SZ) == result_pipe_bytes()
        read = pool.submit(read_files, MemoryProcessor, [(str(path), "p", "p/k.jsonl", 0, path.stat().st_size, True)])
        assert read.result()[0].error is None  # the reads still arrive whole
    finally:
        pool.shutdown()
