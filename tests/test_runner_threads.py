"""The runner's threads: a processor run beside the others (reported in its turn, or in the order they
finish), and a processor's ``begin_run`` started while the run plans."""

import time

import pytest

import resources.ingest.runner as runner
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.runner import run_processors
from resources.ingest.session_files import ParseStats, iter_jsonl
from resources.state.store import load_processor_state
from tests.runner_support import LineCounter

pytestmark = pytest.mark.unit


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
