"""The processor runner: which files each processor sees, failure isolation, marking rules."""

import os
import time

import pytest

import resources.ingest.plan as plan
import resources.ingest.runner as runner
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.runner import run_processors
from resources.ingest.session_files import ParseStats, iter_jsonl
from resources.state.store import load_processor_state
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.unit


class LineCounter(SessionProcessor):
    """Counts JSON lines per file and remembers what it was asked to read (a real, tiny processor)."""

    def __init__(self, name="lines", fail_on=(), result_override=None):
        self.name = name
        self.fail_on = set(fail_on)
        self.result_override = result_override
        self.calls: list[tuple[str, int]] = []
        self.committed: list[str] = []
        self._batch: list[str] = []

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        self.calls.append((session_key, start_offset))
        if session_key in self.fail_on:
            raise ValueError(f"cannot handle {session_key}")
        stats = ParseStats()
        n = sum(1 for _ in iter_jsonl(session_path, start_offset, stats))
        self._batch.append(session_key)
        if self.result_override is not None:
            return self.result_override
        return ProcessorResult(items_count=n, end_offset=stats.end_offset, bytes_read=stats.bytes_read,
                               malformed=stats.malformed)

    def commit(self, conn):
        self.committed.extend(self._batch)
        self._batch.clear()


def _write(root, key, lines):
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _bump_mtime(path):
    later = time.time() + 5
    os.utime(path, (later, later))


def test_first_run_processes_everything_second_run_nothing(samples_root, state):
    first = run_processors([LineCounter()], samples_root, state)["lines"]
    assert (first["scanned"], first["processed"], first["errors"], first["items_extracted"]) == (4, 4, 0, 235)
    second = run_processors([LineCounter()], samples_root, state)["lines"]
    assert (second["processed"], second["skipped"]) == (0, 4)


def test_stable_files_are_not_hashed(samples_root, state, monkeypatch):
    run_processors([LineCounter()], samples_root, state)
    hashed = []
    real = plan.compute_file_hash
    monkeypatch.setattr(plan, "compute_file_hash", lambda p, size=None: hashed.append(p) or real(p, size))
    run_processors([LineCounter()], samples_root, state)
    assert hashed == []


def test_touched_file_is_rehashed_then_skipped_if_content_is_the_same(samples_root, state):
    run_processors([LineCounter()], samples_root, state)
    path = next(samples_root.rglob("fed8ce56*.jsonl"))
    _bump_mtime(path)
    proc = LineCounter()
    stats = run_processors([proc], samples_root, state)["lines"]
    assert proc.calls == [] and stats["skipped"] == 4
    path.write_text(path.read_text().replace("e", "E", 1))  # same size, new content
    _bump_mtime(path)
    proc = LineCounter()
    stats = run_processors([proc], samples_root, state)["lines"]
    assert [c[0] for c in proc.calls] == [path.relative_to(samples_root).as_posix()]
    assert proc.calls[0][1] == 0  # rewritten, so read from the start


def test_grown_file_is_read_from_where_the_last_run_stopped(tmp_path, state):
    root = tmp_path / "tree"
    path = _write(root, "p/s.jsonl", ['{"n": 1}', '{"n": 2}'])
    run_processors([LineCounter()], root, state)
    with open(path, "a") as f:
        f.write('{"n": 3}\n')
    proc = LineCounter()
    stats = run_processors([proc], root, state)["lines"]
    assert proc.calls == [("p/s.jsonl", 18)]
    assert stats["bytes_read"] == 9
    # the run extracted one item (its numbers add up across runs); the state keeps the file's total
    assert stats["items_extracted"] == stats["by_project"]["p"]["items_extracted"] == 1
    with state.connect() as conn:
        assert load_processor_state(conn, "lines")["p/s.jsonl"].items_extracted == 3


def test_processors_are_independent(samples_root, state):
    run_processors([LineCounter("a")], samples_root, state)
    b = LineCounter("b")
    stats = run_processors([LineCounter("a"), b], samples_root, state)
    assert stats["a"]["processed"] == 0 and stats["b"]["processed"] == 4 and len(b.calls) == 4


def test_a_failing_file_stays_unmarked_and_is_retried_while_others_go_on(samples_root, state):
    bad = "-Users-chip-dev-ai-music/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"
    failing, other = LineCounter("usage", fail_on={bad}), LineCounter("other")
    stats = run_processors([failing, other], samples_root, state)
    assert (stats["usage"]["processed"], stats["usage"]["errors"]) == (3, 1)
    assert stats["usage"]["error_files"][0]["file"] == bad
    assert stats["usage"]["failed_files"] == [bad]
    assert stats["other"]["processed"] == 4
    retry = LineCounter("usage")
    again = run_processors([retry], samples_root, state)["usage"]
    assert [c[0] for c in retry.calls] == [bad] and again["processed"] == 1


def test_zero_items_still_marks_and_a_wrong_return_type_counts_as_zero(samples_root, state):
    stats = run_processors([LineCounter("empty", result_override=ProcessorResult(items_count=0))], samples_root, state)
    assert (stats["empty"]["processed"], stats["empty"]["items_extracted"]) == (4, 0)
    stats = run_processors([LineCounter("weird", result_override={"items": 5})], samples_root, state)
    assert (stats["weird"]["processed"], stats["weird"]["items_extracted"], stats["weird"]["errors"]) == (4, 0, 0)
    assert run_processors([LineCounter("weird")], samples_root, state)["weird"]["processed"] == 0


def test_failed_commit_leaves_every_file_of_the_batch_unmarked(samples_root, state):
    class BrokenCommit(LineCounter):
        def commit(self, conn):
            raise OSError("disk full")

    stats = run_processors([BrokenCommit("usage")], samples_root, state)["usage"]
    assert (stats["processed"], stats["errors"]) == (0, 4)
    assert len(stats["failed_files"]) == 4
    [project] = stats["by_project"].values()
    assert (project["errors"], len(project["error_files"])) == (4, 4)
    assert all(e["error"].startswith("commit failed: ") for e in project["error_files"])
    assert run_processors([LineCounter("usage")], samples_root, state)["usage"]["processed"] == 4


def test_missing_root_gives_zero_stats(tmp_path, state):
    stats = run_processors([LineCounter()], tmp_path / "missing", state)["lines"]
    assert {k: v for k, v in stats.items() if k not in ("error_files", "failed_files", "by_project")} == dict.fromkeys(
        ["scanned", "processed", "skipped", "errors", "items_extracted", "lines_malformed", "bytes_read", "vanished"],
        0,
    )


def test_file_deleted_mid_run_is_reported_not_failed(samples_root, state):
    victim = next(samples_root.rglob("ff71dbed*.jsonl"))

    class DeletesAFile(LineCounter):
        def process_session(self, session_path, *args, **kwargs):
            if victim.exists():
                victim.unlink()
            return super().process_session(session_path, *args, **kwargs)

    stats = run_processors([DeletesAFile()], samples_root, state)["lines"]
    assert stats["vanished"] == 1 and stats["errors"] == 0 and stats["processed"] == 3


def test_unreadable_file_is_reported_and_retried(samples_root, state, monkeypatch):
    real = plan.compute_file_hash
    locked = next(samples_root.rglob("ba79134d*.jsonl"))

    def unreadable(path, size=None):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, size)

    monkeypatch.setattr(plan, "compute_file_hash", unreadable)
    stats = run_processors([LineCounter()], samples_root, state)["lines"]
    assert (stats["processed"], stats["errors"]) == (3, 1)
    assert "Permission denied" in stats["error_files"][0]["error"]
    monkeypatch.setattr(plan, "compute_file_hash", real)
    assert run_processors([LineCounter()], samples_root, state)["lines"]["processed"] == 1


def test_malformed_lines_are_kept_for_a_person_to_find(tmp_path, state):
    root = tmp_path / "tree"
    _write(root, "p/s.jsonl", ['{"n": 1}', "{oops", '{"n": 2}'])
    stats = run_processors([LineCounter()], root, state)["lines"]
    assert stats["lines_malformed"] == 1
    with state.connect() as conn:
        rows = conn.execute("SELECT session_key, byte_offset, preview FROM malformed_lines").fetchall()
    assert rows == [("p/s.jsonl", 9, "{oops\n")]


def test_file_growing_while_it_is_read_is_finished_on_the_next_run(tmp_path, state):
    root = tmp_path / "tree"
    path = _write(root, "p/s.jsonl", ['{"n": 1}'])

    class AppendsWhileReading(LineCounter):
        def process_session(self, session_path, *args, **kwargs):
            with open(session_path, "a") as f:  # the agent writes a line while we read
                f.write('{"n": 2}\n')
            return super().process_session(session_path, *args, **kwargs)

    run_processors([AppendsWhileReading()], root, state)
    with open(path, "a") as f:
        f.write('{"n": 3}\n')
    _bump_mtime(path)
    after = LineCounter()
    run_processors([after], root, state)
    with state.connect() as conn:
        assert load_processor_state(conn, "lines")["p/s.jsonl"].items_extracted == 3
    assert after.calls == [("p/s.jsonl", path.stat().st_size - 9)]  # only the line it had not seen


def test_numbers_are_counted_per_project_and_add_up_to_the_run(samples_root, state):
    other = samples_root / "-other-project"
    other.mkdir()
    (other / "one.jsonl").write_text('{"a": 1}\n{"b": 2}\nnot json\n')
    stats = run_processors([LineCounter()], samples_root, state)["lines"]
    per = stats["by_project"]
    assert set(per) == {SAMPLE_PROJECT, "-other-project"}
    assert (per["-other-project"]["scanned"], per["-other-project"]["processed"]) == (1, 1)
    assert per["-other-project"]["bytes_read"] == (other / "one.jsonl").stat().st_size
    assert per[SAMPLE_PROJECT]["scanned"] == 4
    for key in ("scanned", "processed", "items_extracted", "bytes_read", "lines_malformed", "errors"):
        assert stats[key] == sum(p[key] for p in per.values()), key


class NonNegative(SessionProcessor):
    """Writes every line's ``n`` to a DuckDB table that refuses negatives, all files in one transaction:
    one file's bad row fails the whole commit, as a value a processor let through would."""

    name = "nonneg"
    commit_every_files = None

    def __init__(self):
        self.rows: list[tuple[str, int]] = []
        self.commits = 0

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        stats = ParseStats()
        rows = [(session_key, line.obj["n"]) for line in iter_jsonl(session_path, start_offset, stats)]
        self.rows.extend(rows)
        return ProcessorResult(items_count=len(rows), end_offset=stats.end_offset, bytes_read=stats.bytes_read)

    def commit(self, conn):
        self.commits += 1
        conn.execute("CREATE TABLE IF NOT EXISTS nonneg (session_key VARCHAR, n BIGINT CHECK (n >= 0))")
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.executemany("INSERT INTO nonneg VALUES (?, ?)", self.rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.rows = []

    def discard(self):
        self.rows = []


def test_a_failed_commit_is_split_until_the_one_failing_file_is_found(tmp_path, state):
    root = tmp_path / "tree"
    keys = [f"p{i % 2}/s{i:02}.jsonl" for i in range(16)]
    for i, key in enumerate(keys):
        _write(root, key, ['{"n": 1}', '{"n": -1}' if i == 11 else '{"n": 2}'])
    proc = NonNegative()
    stats = run_processors([proc], root, state)["nonneg"]
    assert (stats["processed"], stats["errors"], stats["failed_files"]) == (15, 1, [keys[11]])
    [error] = stats["by_project"]["p1"]["error_files"]
    assert error["file"] == keys[11] and error["error"].startswith("commit failed: ") and "CHECK" in error["error"]
    assert stats["items_extracted"] == 30 and stats["bytes_read"] == sum((root / k).stat().st_size for k in keys
                                                                           if k != keys[11])
    assert proc.commits <= 1 + 2 * 4, "a binary split, not one commit per file"
    with state.connect() as conn:
        stored = conn.execute("SELECT session_key, count(*) FROM nonneg GROUP BY 1 ORDER BY 1").fetchall()
        assert stored == [(k, 2) for k in sorted(keys) if k != keys[11]], "every other file committed once"
        assert set(load_processor_state(conn, "nonneg")) == set(keys) - {keys[11]}
    again = run_processors([NonNegative()], root, state)["nonneg"]
    assert (again["processed"], again["errors"], again["skipped"]) == (0, 1, 15)
    _write(root, keys[11], ['{"n": 1}', '{"n": 3}'])
    assert run_processors([NonNegative()], root, state)["nonneg"]["processed"] == 1


def test_usage_is_reported_ready_before_memory_runs(samples_root, settings, tmp_path):
    """iter_processors hands back usage's stats once its rows are committed, before memory has read a
    file: a report in another process already counts every response then."""
    import json
    import subprocess
    import sys

    from resources.ingest.processors.memory import MemoryProcessor
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import iter_processors
    from resources.memory.lance import LanceStore
    from resources.memory.schema import RECORDS
    from resources.state.store import StateStore

    store = LanceStore(settings.lance_dir)
    memory = MemoryProcessor(store)
    steps = iter_processors([UsageProcessor(), memory], samples_root, StateStore.from_settings(settings))
    name, stats = next(steps)
    assert name == "usage" and stats["processed"] == 4 and not memory._stats  # memory has not begun
    env = {**os.environ, "SESSIONLAKE_HOME": str(settings.home), "SESSIONLAKE_SESSIONS_DIR": str(samples_root)}
    report = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["totals"]["totalTokens"] > 0
    assert store.count(RECORDS) == 0
    assert [n for n, _ in steps] == ["memory"] and store.count(RECORDS) > 0


def _warehouse(store):
    with store.connect() as conn:
        return (
            conn.execute("SELECT * EXCLUDE (computed_cost_usd) FROM usage_messages ORDER BY dedup_key").fetchall(),
            conn.execute("""SELECT session_file, items_extracted, file_hash, file_size, byte_offset, tail_hash
                            FROM session_processor_state ORDER BY ALL""").fetchall(),
            conn.execute("SELECT path, size, mtime_ns, file_hash FROM session_files ORDER BY path").fetchall(),
        )


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # imported by an earlier test; workers only parse
def test_worker_reads_store_what_a_serial_run_stores(samples_root, tmp_path):
    """Files new to a processor that reads in worker processes are hashed and fingerprinted by the workers;
    the rows, the marks and session_files are those of a run that reads everything in this process, and a
    file that vanished before its worker got to it is counted, not marked."""
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.session_files import compute_file_hash, walk_sessions
    from resources.state.store import StateStore

    files = list(walk_sessions(samples_root))
    gone = _write(samples_root, f"{SAMPLE_PROJECT}/gone.jsonl", ['{"type": "user"}'])
    with_gone = list(walk_sessions(samples_root))
    gone.unlink()
    serial, parallel = StateStore(tmp_path / "serial.duckdb"), StateStore(tmp_path / "parallel.duckdb")
    run_processors([UsageProcessor()], samples_root, serial, files=files)
    stats = run_processors([UsageProcessor()], samples_root, parallel, files=with_gone, workers=2)["usage"]
    assert (stats["processed"], stats["vanished"], stats["errors"]) == (len(files), 1, 0)
    rows, marks, seen = _warehouse(parallel)
    assert (rows, marks) == _warehouse(serial)[:2] and len(rows) > 0
    assert {m[0]: m[2] for m in marks} == {f.key: compute_file_hash(f.fspath) for f in files}
    assert [s for s in seen if s[0] != gone.relative_to(samples_root).as_posix()] == _warehouse(serial)[2]


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # imported by an earlier test; workers only parse
def test_a_large_batch_keeps_the_best_copy_across_files_read_by_workers(tmp_path):
    """Above `SMALL_BATCH_ROWS` the batch is written through a JSON-lines file: the same response in two files keeps
    its best copy (a larger total wins, of equal ones the first file's), as in a serial run."""
    import orjson

    from bench.corpus import generate_corpus
    from resources.ingest.processors.usage import UsageProcessor
    from resources.state.store import SMALL_BATCH_ROWS, StateStore

    root = tmp_path / "tree"
    corpus = generate_corpus(root, sessions=120, projects=2, turns=10)
    original = sorted((root / "-home-dev-project-000").glob("*.jsonl"))[0]
    lines = [orjson.loads(line) for line in original.read_bytes().splitlines()]
    responses = [line for line in lines if line.get("type") == "assistant"]
    bigger = {**responses[-1], "message": {**responses[-1]["message"], "usage": {
        **responses[-1]["message"]["usage"], "output_tokens": 10**6}}}
    # a later file: every line of the original again (equal copies: the original's rows stay), one bigger copy
    _write(root, "-home-dev-project-001/zz-copy.jsonl", [orjson.dumps(line).decode() for line in [*lines, bigger]])
    serial, parallel = StateStore(tmp_path / "serial.duckdb"), StateStore(tmp_path / "parallel.duckdb")
    run_processors([UsageProcessor()], root, serial)
    run_processors([UsageProcessor()], root, parallel, workers=2)
    rows = _warehouse(parallel)[0]
    assert len(rows) == corpus["files"] * 10 > SMALL_BATCH_ROWS
    assert _warehouse(parallel)[:2] == _warehouse(serial)[:2]
    with parallel.connect() as conn:
        by_file = dict(conn.execute("""SELECT session_key, count(*) FROM usage_messages
                                       WHERE session_key LIKE '%zz-copy.jsonl' OR session_key = ? GROUP BY 1""",
                                    [original.relative_to(root).as_posix()]).fetchall())
        output = conn.execute("SELECT sum(output_tokens) FROM usage_messages").fetchone()[0]
    assert by_file == {original.relative_to(root).as_posix(): 9, "-home-dev-project-001/zz-copy.jsonl": 1}
    final = [r for r in responses if r["message"]["id"] == bigger["message"]["id"]][-1]["message"]["usage"]
    assert output == corpus["output"] - final["output_tokens"] + 10**6


class BesideCounter(LineCounter):
    """A LineCounter the runner may run in a thread beside the others; it notes the thread of each file."""

    runs_beside = True

    def __init__(self, *args, started=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads: set[str] = set()
        self.started = started

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        import threading

        self.threads.add(threading.current_thread().name)
        if self.started is not None:
            self.started.set()
        return super().process_session(session_path, project, session_key, conn, start_offset=start_offset)


def test_a_processor_that_runs_beside_runs_in_its_own_thread_and_is_reported_in_its_turn(
        samples_root, state, caplog):
    import threading

    key = next(samples_root.rglob("fed8ce56*.jsonl")).relative_to(samples_root).as_posix()
    first, beside = LineCounter("first"), BesideCounter("beside", fail_on={key})
    with caplog.at_level("WARNING"):
        order = [name for name, _ in runner.iter_processors([first, beside], samples_root, state)]
    assert order == ["first", "beside"]
    assert beside.threads == {"sessionlake-beside"} != {threading.current_thread().name}
    stats = run_processors([BesideCounter("beside")], samples_root, state)["beside"]  # alone: nothing beside it
    assert stats["processed"] == 1 and stats["skipped"] == 3  # the file it failed on is read again
    # its warning about the failed file came out on the caller's logger, with the traceback
    failed = [r for r in caplog.records if key in r.getMessage() and "beside failed" in r.getMessage()]
    assert failed and failed[0].exc_info and failed[0].exc_info[0] is ValueError
    with state.connect() as conn:
        assert all(key in load_processor_state(conn, name) for name in ("first", "beside"))


class HeldBesideCounter(BesideCounter):
    """A BesideCounter whose first file waits (up to 30 s) until ``release`` is set."""

    def __init__(self, *args, release=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = release

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        self.release.wait(timeout=30)
        return super().process_session(session_path, project, session_key, conn, start_offset=start_offset)


def test_processors_beside_are_reported_in_the_order_they_finish_each_run_once(samples_root, state):
    import threading

    release = threading.Event()
    first = LineCounter("first")
    slow = HeldBesideCounter("slow", release=release)
    fast = BesideCounter("fast")
    order = []
    for name, stats in runner.iter_processors([first, slow, fast], samples_root, state):
        order.append((name, stats["processed"]))
        if name == "fast":  # the slow one goes on only once the fast one was reported
            release.set()
    assert order == [("first", 4), ("fast", 4), ("slow", 4)]
    assert len(first.calls) == len(slow.calls) == len(fast.calls) == 4  # none ran twice
    assert slow.threads == {"sessionlake-slow"} and fast.threads == {"sessionlake-fast"}



def test_an_error_beside_is_raised_in_its_turn_and_stopping_early_stops_the_thread(
        samples_root, state, monkeypatch):
    import threading

    class Broken(BesideCounter):
        def commit(self, conn):
            raise OSError(28, "No space left on device")  # the environment's: raised, not split

    with pytest.raises(OSError, match="No space left"):
        run_processors([LineCounter("first"), Broken("broken")], samples_root, state)

    # a caller that stops after the first processor: the thread stops before its next chunk of files
    monkeypatch.setattr(runner, "FILES_PER_CONNECTION", 1)
    started, release = threading.Event(), threading.Event()

    class Slow(BesideCounter):
        def process_session(self, *args, **kwargs):
            result = super().process_session(*args, **kwargs)
            release.wait(5)
            return result

    slow = Slow("slow", started=started)
    run = runner.iter_processors([LineCounter("first"), slow], samples_root, state)
    assert next(run)[0] == "first"
    started.wait(5)
    closing = threading.Thread(target=run.close)
    closing.start()
    time.sleep(0.2)
    release.set()
    closing.join(10)
    assert not closing.is_alive()
    assert len(slow.calls) == 1 and slow.committed == []  # one file read, none committed or marked
    with state.connect() as conn:
        assert load_processor_state(conn, "slow") == {}


class ReadingCounter(SessionProcessor):
    """Counts each file's lines, read in a worker process (``parallel_reads``); notes where `begin_run` ran."""

    name = "second"
    parallel_reads = True

    def __init__(self, begun=None, fail=False):
        self.begun, self.fail = begun, fail
        self.begin_threads: list[str] = []
        self.taken = 0

    def begin_run(self):
        import threading

        self.begin_threads.append(threading.current_thread().name)
        if self.fail:
            raise ValueError("no tables")
        self.begun.set()

    @staticmethod
    def read_session(session_path, project, session_key, start_offset=0):
        stats = ParseStats()
        n = sum(1 for _ in iter_jsonl(session_path, start_offset, stats))
        return n, ProcessorResult(items_count=n, end_offset=stats.end_offset, bytes_read=stats.bytes_read)

    def take(self, read):
        self.taken += 1


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_a_processor_read_before_the_run_begins_while_the_run_plans(samples_root, state, monkeypatch):
    """With a prefetch, a later processor's `begin_run` (memory imports Lance and creates its tables there)
    starts in a thread of its own before the run plans, so it is done by the processor's turn; what it raises
    is raised in that turn, and the thread never outlives the run."""
    import threading

    from resources.ingest.prefetch import start_prefetch
    from resources.ingest.session_files import walk_sessions

    files = list(walk_sessions(samples_root))
    begun, planned_after_begin = threading.Event(), []
    plan_files = runner.plan
    monkeypatch.setattr(runner, "plan", lambda *a, **k: planned_after_begin.append(begun.wait(10)) or plan_files(
        *a, **k))

    def run(second):
        prefetch = start_prefetch([ReadingCounter], {"second": files}, state, 0, 1 << 40)
        try:
            return run_processors([LineCounter("first"), second], samples_root, state, files=files,
                                  prefetch=prefetch), prefetch
        finally:
            prefetch.close()

    second = ReadingCounter(begun)
    stats, prefetch = run(second)
    assert planned_after_begin[0] is True, "begin_run ran before the run planned"
    assert second.begin_threads == ["sessionlake-second-begin"]
    assert stats["second"]["processed"] == second.taken == prefetch.taken["second"] == len(files)

    failing = ReadingCounter(fail=True)
    with state.connect() as conn:  # new files for it again
        conn.execute("DELETE FROM session_processor_state WHERE processor_name = 'second'")
    with pytest.raises(ValueError, match="no tables"):
        run(failing)
    assert failing.begin_threads == ["sessionlake-second-begin"]
    assert not [t for t in threading.enumerate() if t.name.endswith("-begin")]


def test_a_run_holds_the_collector_back_and_puts_it_back_after(samples_root, state):
    """During a run, what was alive at its start is frozen and young collections wait for more objects;
    after it (also when it raised) the collector is as before."""
    import gc

    from resources.ingest.fewer_collections import YOUNG_THRESHOLD

    class Watching(LineCounter):
        def process_session(self, *args, **kwargs):
            seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
            return super().process_session(*args, **kwargs)

    class Broken(LineCounter):
        def commit(self, conn):
            raise OSError(28, "No space left on device")

    before = gc.get_threshold()
    seen: list[tuple[int, bool]] = []
    run_processors([Watching("watching")], samples_root, state)
    assert seen and set(seen) == {(max(before[0], YOUNG_THRESHOLD), True)}
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)
    with pytest.raises(OSError):
        run_processors([Broken("broken")], samples_root, state)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


def test_a_run_inside_a_caller_that_holds_the_collector_back_freezes_what_came_alive_since():
    """The command line holds the collector back before it imports Dagster; the run inside freezes Dagster's
    objects too, and the outermost exit unfreezes everything."""
    import gc

    from resources.ingest.fewer_collections import fewer_collections

    with fewer_collections():
        outer = gc.get_freeze_count()
        alive = [[n] for n in range(1000)]
        with fewer_collections():
            assert gc.get_freeze_count() >= outer + len(alive)
    assert gc.get_freeze_count() == 0


def test_a_paused_block_is_not_collected_and_what_it_allocated_is_frozen_after():
    """The command line imports Dagster and opens its instance with the collector paused: no young collection
    walks their objects then, and they are frozen after, so none walks them later (0.21 -> 0.03 s of CPU in
    collections over a first ingest); outside `fewer_collections` nothing is frozen."""
    import gc

    from resources.ingest.fewer_collections import collections_paused, fewer_collections

    collected = []

    def count(phase, info):
        if phase == "stop":
            collected.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with fewer_collections():
            outer = gc.get_freeze_count()
            with collections_paused():
                alive = [[n] for n in range(100_000)]  # twice the young threshold: collected twice otherwise
                assert not gc.isenabled()
            assert collected == [] and gc.isenabled()
            assert gc.get_freeze_count() >= outer + len(alive)
        assert gc.get_freeze_count() == 0
        with collections_paused():
            more = [[n] for n in range(1000)]
        assert gc.get_freeze_count() == 0 and gc.isenabled() and len(more) == 1000
    finally:
        gc.callbacks.remove(count)
