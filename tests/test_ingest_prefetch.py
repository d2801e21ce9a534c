"""`sessionlake ingest` reads the new files in a worker process before its run starts, and the run takes those
reads (resources/ingest/prefetch.py): the stores hold what a run without them holds, and a file that changed
after it was read ahead is read again by the run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from bench.corpus import generate_corpus
from resources.config.settings import Settings
from resources.memory.lance import LanceStore
from resources.memory.schema import EDGES
from resources.state.store import StateStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

CHANGE_AFTER_READ_AHEAD = """
import os, sys
from pathlib import Path
import resources.ingest.prefetch as prefetch
from pipelines.cli.main import main

start = prefetch.start_prefetch

def start_then_change(*args, **kwargs):
    prefetch = start(*args, **kwargs)
    prefetch.pool.shutdown(wait=True)  # every file is read ahead: now two change before the run starts
    grown, rewritten = Path(sys.argv[1]), Path(sys.argv[2])
    with open(grown, "a") as f:
        f.write(sys.argv[3] + "\\n")
    st = os.stat(rewritten)
    rewritten.write_bytes(rewritten.read_bytes().replace(b"parser", b"PARSER", 1))  # same size
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    return prefetch

prefetch.start_prefetch = start_then_change
sys.exit(main(["ingest", "--json"]))
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """200 generated sessions in 4 projects, ~10 MB: more than the 8 MB from which new files are read ahead."""
    generate_corpus(tmp_path / "tree", sessions=200, projects=4)
    return tmp_path / "tree"


def _env(tmp_path: Path, tree: Path, name: str) -> dict:
    return {**os.environ, "HOME": str(tmp_path), "SESSIONLAKE_SESSIONS_DIR": str(tree), "PYTHONPATH": str(REPO),
            "SESSIONLAKE_HOME": str(tmp_path / name / "home"), "DAGSTER_HOME": str(tmp_path / name / "dagster")}


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


def _stored(env: dict) -> dict:
    """What the stores hold, without the times of writing."""
    settings = Settings(home=Path(env["SESSIONLAKE_HOME"]), sessions_dir=Path(env["SESSIONLAKE_SESSIONS_DIR"]))
    with StateStore.from_settings(settings).connect() as conn:
        usage = conn.execute("SELECT * FROM usage_messages ORDER BY dedup_key").fetchall()
        marks = conn.execute("""SELECT processor_name, session_file, file_hash, file_size, byte_offset, tail_hash,
                                       items_extracted FROM session_processor_state ORDER BY ALL""").fetchall()
        malformed = conn.execute("SELECT count(*) FROM malformed_lines").fetchone()
        prices = conn.execute("SELECT * FROM price_bands ORDER BY ALL").fetchall()
    lance = LanceStore.from_settings(settings)
    columns = ["id", "text", "role", "session_id", "session_key", "project", "timestamp", "model", "tags"]
    records = sorted(lance.records_where("true", columns), key=lambda r: r["id"])
    edges = sorted(row["id"] for row in lance.dataset(EDGES).to_table(columns=["id"]).to_pylist())
    return {"usage": usage, "marks": marks, "malformed": malformed, "prices": prices, "records": records,
            "edges": edges}


def _read_ahead_line(env: dict) -> str:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        return next(e.user_message for e in instance.all_logs(run.run_id)
                    if e.user_message.startswith("files read before the run"))


def test_the_run_takes_the_reads_started_before_it_and_stores_what_a_run_without_them_does(tmp_path, tree):
    env = _env(tmp_path, tree, "cli")
    result = json.loads(_run(["-m", "pipelines.cli.main", "ingest", "--json"], env).stdout)
    assert result["success"] and result["assets"]["usage_messages"]["files_processed"] == 200
    assert _read_ahead_line(env) == ("files read before the run and taken by it: memory 200 of 200, usage 200 of 200;"
                                     " and the price database's prices")  # usage's commits priced with them

    direct = _env(tmp_path, tree, "direct")  # the processors called directly: nothing read before a run
    _run(["-m", "bench.direct"], direct)
    stored = _stored(env)
    assert stored == _stored(direct)
    assert len(stored["usage"]) > 2000 and len(stored["records"]) > 4000


def test_a_file_that_changed_after_it_was_read_ahead_is_read_again_by_the_run(tmp_path, tree):
    sessions = sorted(tree.rglob("*.jsonl"))
    grown, rewritten = sessions[0], sessions[1]
    assert b"parser" in rewritten.read_bytes()
    line = json.loads(grown.read_text().splitlines()[1])  # a response: the appended one has a new id and tokens
    line["message"]["id"], line["requestId"], line["uuid"] = "msg_appended", "req_appended", "uuid-appended"
    line["message"]["usage"]["output_tokens"] = 4321
    env = _env(tmp_path, tree, "cli")
    _run(["-c", CHANGE_AFTER_READ_AHEAD, str(grown), str(rewritten), json.dumps(line)], env)
    assert _read_ahead_line(env).startswith("files read before the run and taken by it: memory 198 of 200, usage 198 "
                                            "of 200")

    direct = _env(tmp_path, tree, "direct")  # the same tree, read by the processors called directly
    _run(["-m", "bench.direct"], direct)
    stored = _stored(env)
    assert stored == _stored(direct)
    assert any(row[1] == "msg_appended" for row in stored["usage"])
    assert any("PARSER" in record["text"] for record in stored["records"])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc (Linux)")
def test_the_reading_worker_ends_when_the_command_is_killed(tmp_path, tree):
    env = _env(tmp_path, tree, "cli")
    cli = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (workers := _children(cli.pid)) and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert workers, "the command started no worker process"
    cli.kill()  # the command only: not its process group
    cli.wait()
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
