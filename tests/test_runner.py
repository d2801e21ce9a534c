"""The processor runner: which files each processor sees, failure isolation, marking rules."""

import os
import time

import pytest

import resources.ingest.plan as plan
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.runner import run_processors
from resources.ingest.session_files import ParseStats, iter_jsonl
from resources.state.store import load_processor_state
from tests.conftest import SAMPLE_PROJECT
from tests.runner_support import LineCounter

pytestmark = pytest.mark.unit


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
