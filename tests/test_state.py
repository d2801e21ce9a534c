"""The DuckDB warehouse: migration ladder, processor-state semantics, lock retries across processes."""

import subprocess
import sys
import time
from datetime import UTC, datetime

import duckdb
import pytest

from resources.state.migrations import LATEST_VERSION, MIGRATIONS
from resources.state.store import (
    ProcessedMark,
    StateStore,
    load_processor_state,
    mark_processed,
    migrate,
)

pytestmark = pytest.mark.unit


def is_processed(conn, processor: str, key: str, file_hash: str) -> bool:
    state = load_processor_state(conn, processor).get(key)
    return state is not None and state.is_processed(file_hash)


def _mark(key: str, file_hash: str, items: int = 1) -> ProcessedMark:
    return ProcessedMark(key, "proj", items, file_hash, 10, 10, None, datetime.now(UTC))


def test_fresh_database_reaches_latest_version(tmp_path):
    store = StateStore(tmp_path / "state.duckdb")
    assert store.schema_version() == LATEST_VERSION


def test_migration_from_version_1_keeps_rows_and_is_idempotent(tmp_path):
    path = tmp_path / "state.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for statement in MIGRATIONS[0][1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, now())")
    conn.execute("""INSERT INTO session_processor_state VALUES ('usage', 'p/s.jsonl', 'p', now(), 7, 'abc')""")
    conn.close()

    with StateStore(path).connect() as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST_VERSION
        state = load_processor_state(conn, "usage")
        assert state["p/s.jsonl"].items_extracted == 7 and state["p/s.jsonl"].byte_offset == 0
        assert migrate(conn) == LATEST_VERSION  # re-running changes nothing
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        assert versions == list(range(1, LATEST_VERSION + 1))


def test_processed_only_when_stored_hash_matches_and_marking_upserts(state):
    with state.connect() as conn:
        assert not is_processed(conn, "usage", "p/s.jsonl", "h1")
        mark_processed(conn, "usage", [_mark("p/s.jsonl", "h1", items=3)])
        assert is_processed(conn, "usage", "p/s.jsonl", "h1")
        assert not is_processed(conn, "usage", "p/s.jsonl", "h2")
        mark_processed(conn, "usage", [_mark("p/s.jsonl", "h2", items=5)])
        assert is_processed(conn, "usage", "p/s.jsonl", "h2")
        assert conn.execute("SELECT count(*), max(items_extracted) FROM session_processor_state").fetchone() == (1, 5)


def test_processors_are_tracked_independently(state):
    with state.connect() as conn:
        mark_processed(conn, "usage", [_mark("p/s.jsonl", "h1")])
        assert is_processed(conn, "usage", "p/s.jsonl", "h1")
        assert not is_processed(conn, "memory", "p/s.jsonl", "h1")


HOLDER = """
import duckdb, sys, time
conn = duckdb.connect(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


@pytest.mark.integration  # other processes
def test_connect_waits_for_another_process_holding_the_file(tmp_path):
    path = tmp_path / "state.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    with StateStore(path, lock_wait_sec=30).connect() as conn:
        waited = time.monotonic() - started
        assert conn.execute("SELECT count(*) FROM held").fetchone() == (0,)
    holder.wait(timeout=10)
    assert waited > 0.5  # it really was locked out, and got in once the holder let go


@pytest.mark.integration  # other processes
def test_connect_gives_up_after_its_deadline(tmp_path):
    path = tmp_path / "state.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    try:
        try:
            with StateStore(path, lock_wait_sec=0.5).connect():
                raise AssertionError("connected while another process held the file")
        except duckdb.IOException as exc:
            assert "lock" in str(exc).lower()
    finally:
        holder.kill()


def test_threads_opening_and_closing_connections_at_once_wait_for_each_other(tmp_path):
    """A thread that opens the file while another closes its last connection (DuckDB still holds the file,
    checkpointing) waits and gets a connection, as when another process holds it: the ingest's processors
    beside each other open and close connections at the same time."""
    import threading

    store = StateStore(tmp_path / "state.duckdb")
    with store.connect():
        pass
    errors: list[str] = []

    def open_and_close() -> None:
        for _ in range(300):
            try:
                with store.connect() as conn:
                    conn.execute("SELECT 1").fetchall()
            except Exception as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=open_and_close) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
