"""Kill anywhere: seeded random SIGKILLs during `sessionlake ingest`, `sessionlake archive gc` and the
capture drain, each followed by a rerun to completion, then the invariants.

Each cycle adds a slice of a generated corpus to the tree (half of it appended to files already
ingested, half as new files) and captures records, then for each of the three commands: start it as a
subprocess, SIGKILL it (its whole process group) after a seeded random fraction of the time the last
uninterrupted run of the same command took, and run it again to the end. After every cycle:
- usage totals equal the corpus's known totals (`generate_corpus` returns them), each response once;
- the archive verifies, and every file on disk restores byte for byte;
- every acknowledged capture ULID is in Lance ``records`` exactly once, and nothing else is.
At the end the same invariants are checked once more through the CLI (`usage --json`, `archive verify`,
`restore`). ``SESSIONLAKE_KILL_CYCLES`` sets the kills per command (default 4: 12 kills, 2-3.5 minutes
on 2 shared cores, almost all of it process start-up), ``SESSIONLAKE_KILL_SEED`` the seed (the kill
times also scale with how long the runs take on the machine).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.corpus import generate_corpus
from resources.archive.packs import PackStore
from resources.capture.queue import CaptureQueue
from resources.config.settings import Settings
from resources.memory.lance import LanceStore
from resources.state.store import StateStore

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
DRAIN_CHILD = Path(__file__).with_name("capture_drain_child.py")
CYCLES = int(os.environ.get("SESSIONLAKE_KILL_CYCLES", "4"))
SEED = int(os.environ.get("SESSIONLAKE_KILL_SEED", "20261201"))
SESSIONS_PER_SLICE = 4
PROJECTS = 3
CAPTURES_PER_CYCLE = 40
DRAIN_BATCH = 15  # envelopes per Lance commit: several commits per drain to land between


class Cluster:
    """One data home, sessions tree and Dagster instance, driven through the CLI."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.tree = tmp / "tree"
        self.env = {**os.environ, "SESSIONLAKE_HOME": str(tmp / "home"), "SESSIONLAKE_SESSIONS_DIR": str(self.tree),
                    "DAGSTER_HOME": str(tmp / "dagster"), "PYTHONPATH": str(REPO)}
        self.duration: dict[str, float] = {}
        self.kills: list[tuple[str, float, bool]] = []  # (command, delay, landed while it ran)
        self.runs: list[tuple[str, float]] = []  # (command, seconds) of each run to completion

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update({k: self.env[k] for k in ("SESSIONLAKE_HOME", "SESSIONLAKE_SESSIONS_DIR")})
            return Settings.from_env()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def argv(self, command: str) -> list[str]:
        return {
            "ingest": [sys.executable, "-m", "pipelines.cli.main", "ingest", "--json"],
            "gc": [sys.executable, "-m", "pipelines.cli.main", "archive", "gc", "--json"],
            "drain": [sys.executable, str(DRAIN_CHILD), str(DRAIN_BATCH)],
        }[command]

    def complete(self, command: str) -> str:
        started = time.monotonic()
        done = subprocess.run(self.argv(command), env=self.env, capture_output=True, text=True, timeout=300)
        self.duration[command] = time.monotonic() - started
        self.runs.append((command, round(self.duration[command], 1)))
        assert done.returncode == 0, f"{command} after a kill: exit {done.returncode}\n{done.stderr[-3000:]}"
        return done.stdout

    def kill_during(self, command: str, rng: random.Random, during=None) -> None:
        """Start ``command``, SIGKILL its process group after a random part of its last full run's time."""
        delay = rng.uniform(0.05, 1.0) * self.duration[command]
        child = subprocess.Popen(self.argv(command), env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if during is not None:
                during(delay)
            else:
                time.sleep(delay)
            landed = child.poll() is None
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            landed = False
        finally:
            child.wait(30)
        self.kills.append((command, round(delay, 2), landed))


def _add_slice(tree: Path, gen: Path, rng: random.Random, index: int) -> dict:
    """Generate slice ``index`` and lay it into ``tree``: each file appended to a random existing file of
    its project (a session that grew) or copied as a new file. Returns the slice's known totals."""
    totals = generate_corpus(gen / str(index), sessions=SESSIONS_PER_SLICE, projects=PROJECTS, seed=1000 + index,
                             turns=6)
    for path in sorted((gen / str(index)).rglob("*.jsonl")):
        project = path.parent.name
        existing = sorted((tree / project).glob("*.jsonl")) if (tree / project).exists() else []
        if existing and rng.random() < 0.5:
            with open(rng.choice(existing), "ab") as f:
                f.write(path.read_bytes())
        else:
            (tree / project).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tree / project / path.name)
    return totals


def _tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def _check(cluster: Cluster, expected: dict, acked: set[str], tag: str) -> None:
    settings = cluster.settings()
    with StateStore(settings.state_path).connect(read_only=True) as conn:
        got = conn.execute("""SELECT sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),
                                     sum(cache_read_tokens), count(*), count(DISTINCT dedup_key)
                              FROM usage_messages""").fetchone()
    assert got[4] == got[5], f"{tag}: a response stored twice"
    assert tuple(got[:4]) == (expected["input"], expected["output"], expected["cache_creation"],
                              expected["cache_read"]), f"{tag}: usage totals"
    store = PackStore.from_settings(settings)
    report = store.verify()
    assert report["ok"], f"{tag}: {report['problems']}"
    out = cluster.tmp / f"restored-{tag}"
    for project in store.repos():
        store.restore(project, out)
    assert _tree_files(out) == _tree_files(cluster.tree), f"{tag}: restore is not byte-identical"
    shutil.rmtree(out)
    ids = [r["id"] for r in LanceStore(settings.lance_dir).records_where("tier = 'capture'", ["id"])]
    assert len(ids) == len(set(ids)), f"{tag}: a capture record doubled"
    assert set(ids) == acked, f"{tag}: lost {sorted(acked - set(ids))[:5]}, unexpected {sorted(set(ids) - acked)[:5]}"
    queue = CaptureQueue.from_settings(settings)
    assert queue.pending_count() == 0 and not list(queue.corrupt_dir.glob("*.json")), f"{tag}: inbox not drained"


def _capture_meanwhile(queue: CaptureQueue, acked: set[str], cycle: int, n: int):
    """A producer that keeps appending (acknowledged = `append` returned its ULID) while a drain runs."""

    def during(delay: float) -> None:
        stop = time.monotonic() + delay

        def produce() -> None:
            for i in range(n):
                if time.monotonic() >= stop:
                    break
                acked.add(queue.append({"text": f"cycle {cycle} meanwhile {i}", "role": "note"}))
                time.sleep(0.01)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(max(0.0, stop - time.monotonic()))
        producer.join()

    return during


def test_sigkill_anywhere_during_ingest_gc_and_capture_drain_loses_and_doubles_nothing(tmp_path):
    rng = random.Random(SEED)
    cluster = Cluster(tmp_path)
    gen = tmp_path / "gen"
    expected = dict.fromkeys(("input", "output", "cache_creation", "cache_read"), 0)
    acked: set[str] = set()
    queue = CaptureQueue.from_settings(cluster.settings())
    started = time.monotonic()

    for cycle in range(CYCLES + 1):
        for key, value in _add_slice(cluster.tree, gen, rng, cycle).items():
            if key in expected:
                expected[key] += value
        for i in range(CAPTURES_PER_CYCLE):
            acked.add(queue.append({"text": f"cycle {cycle} note {i}", "session_id": f"s{cycle}"}))
        cli = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "capture", "--text", f"from the CLI {cycle}"],
                             env=cluster.env, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        acked.add(cli.stdout.strip())
        if cycle == 0:  # the first round runs uninterrupted: it sets the time scale of the kills
            cluster.complete("ingest")
            cluster.complete("gc")
            cluster.complete("drain")
        else:
            cluster.kill_during("ingest", rng)
            cluster.complete("ingest")
            cluster.kill_during("gc", rng)
            cluster.complete("gc")
            cluster.kill_during("drain", rng, during=_capture_meanwhile(queue, acked, cycle, 400))
            cluster.complete("drain")
        _check(cluster, expected, acked, f"cycle{cycle}")

    # the same invariants through the user's commands
    usage = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily", "--json"], env=cluster.env,
                           capture_output=True, text=True, timeout=120)
    totals = json.loads(usage.stdout)["totals"]
    assert (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"],
            totals["cacheReadTokens"]) == (expected["input"], expected["output"], expected["cache_creation"],
                                           expected["cache_read"])
    verify = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "archive", "verify"], env=cluster.env,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    out = tmp_path / "restored"
    for project in sorted(p.name for p in cluster.tree.iterdir()):
        restore = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "restore", project, "--to", str(out)],
                                 env=cluster.env, capture_output=True, text=True, timeout=120)
        assert restore.returncode == 0, restore.stderr
    assert _tree_files(out) == _tree_files(cluster.tree)

    landed = {c: sum(1 for name, _, hit in cluster.kills if name == c and hit) for c in ("ingest", "gc", "drain")}
    print(f"kills (command, delay s, landed): {cluster.kills}\nfull runs: {cluster.runs}\n"
          f"{time.monotonic() - started:.0f}s")
    # a kill that came after the run had finished tested nothing: most must land, or the test is idle
    assert all(n >= CYCLES // 2 for n in landed.values()), landed


EXIT_CHILD = """
import atexit, sys, threading, time
from pathlib import Path
from pipelines.cli.process_exit import console_script
from resources.config.settings import Settings
from resources.memory.lance import LanceStore

out = Path(sys.argv[1])
store = LanceStore.from_settings(Settings.from_env())
queue = store.enable_provenance_queue(coalesce_ms=600_000)  # only the exit path can write it in time
store.record_provenance([(sys.argv[2], {"ts": "2026-01-01T00:00:00Z", "cue": "exit", "session_id": "queued"})])


class Teardown:
    def __del__(self):
        (out / "teardown").write_text("ran")


keep = Teardown()
atexit.register(lambda: (out / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("ran"))).start()
print("said before exiting", end="")
console_script(lambda: 3)
"""


def test_commands_end_without_teardown_and_lose_nothing(tmp_path):
    """Every command ends with `exit_now` (os._exit after the writes): what each one wrote is there for
    the next process, queued provenance and threads' writes included, and interpreter teardown is skipped."""
    cluster = Cluster(tmp_path)
    expected = generate_corpus(cluster.tree, sessions=6, projects=2, turns=4)
    cli = [sys.executable, "-m", "pipelines.cli.main"]
    captured = subprocess.run([*cli, "capture", "--text", "kept across the exit"], env=cluster.env,
                              capture_output=True, text=True, timeout=60)
    assert captured.returncode == 0, captured.stderr
    assert CaptureQueue.from_settings(cluster.settings()).pending_count() == 1  # the inbox file is there
    cluster.complete("ingest")
    cluster.complete("drain")
    _check(cluster, expected, {captured.stdout.strip()}, "exit")  # rows, packs and records all landed

    recalled = subprocess.run([*cli, "recall", "parser", "-k", "3", "--session-id", "exit-test", "--json"],
                              env=cluster.env, capture_output=True, text=True, timeout=60)
    assert recalled.returncode == 0, recalled.stderr
    ids = [hit["id"] for hit in json.loads(recalled.stdout)]
    assert ids
    store = LanceStore(cluster.settings().lance_dir)
    entries = store.provenance_of(ids)
    assert all([e["session_id"] for e in entries.get(i, [])] == ["exit-test"] for i in ids), entries

    out = tmp_path / "marks"
    out.mkdir()
    child = subprocess.run([sys.executable, "-c", EXIT_CHILD, str(out), ids[0]], env=cluster.env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 3, child.stderr
    assert child.stdout == "said before exiting"  # flushed before os._exit
    assert {p.name for p in out.iterdir()} == {"atexit", "thread"}  # no teardown: no __del__ at exit
    assert [e["session_id"] for e in store.provenance_of([ids[0]])[ids[0]]] == ["exit-test", "queued"]
