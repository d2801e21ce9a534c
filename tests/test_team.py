"""Many machines, one warehouse, on a real S3 API server (moto, loopback) and a real Dagster instance.

Two simulated machines archive their trees and run ``sessionlake push`` (a subprocess each); the
central deployment's sensor sees the manifests (``evaluate_tick``) and the run it asks for ingests
the pushed packs. The central totals must equal a local ingest of the same trees, every row must
carry its user and machine, a pack both machines pushed and a repeated push count once, and a push
SIGKILLed half way completes on the next run without duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import pipelines.definitions
from bench.corpus import generate_corpus
from pipelines.defs.resources import TeamResource
from pipelines.defs.team.sensors import team_manifest_sensor
from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.ingest.session_files import ParseStats, iter_jsonl
from resources.memory.lance import LanceStore
from resources.sources import found_sources, walk_all
from resources.state.store import StateStore, transaction
from resources.team.ingest import ingest_manifests, new_manifests
from resources.team.manifests import list_manifest_names, read_manifest
from tests.archive_support import grow
from tests.conftest import SAMPLE_PROJECT, SAMPLES, agent_settings
from tests.test_sources import EXPECTED
from tests.test_sources import TOTALS as AGENT_TOTALS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
OPENCODE_STORAGE = ".local/share/opencode/storage"
TOTALS = "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), " \
         "sum(cache_read_tokens) FROM usage_messages"


def _archive(home: Path, tree: Path) -> None:
    store = PackStore(home / "packs", StateStore(home / "state.duckdb"))
    run_processors([ArchiveProcessor(store)], tree, store.state)


def _push(home: Path, team_uri: str, user: str, machine: str, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_TEAM_URI": team_uri,
           "SESSIONLAKE_USER": user, "SESSIONLAKE_MACHINE": machine}
    env.pop("SESSIONLAKE_STORAGE_URI", None)
    args = list(cmd) or [sys.executable, "-m", "pipelines.cli.main", "push", "--json"]
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _central(tmp_path: Path, team_uri: str, monkeypatch) -> Path:
    home = tmp_path / "central"
    monkeypatch.setenv("SESSIONLAKE_HOME", str(home))
    monkeypatch.setenv("SESSIONLAKE_TEAM_URI", team_uri)
    monkeypatch.setenv("SESSIONLAKE_STORAGE_URI", team_uri)
    return home


def _tick_and_run(instance, cursor: str | None) -> tuple[str | None, int]:
    """One sensor tick through the user's path; run what it asks for. Returns (cursor, runs)."""
    repo = pipelines.definitions.defs.get_repository_def()
    ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=repo,
                                  cursor=cursor, resources={"team": TeamResource()})
    result = team_manifest_sensor.evaluate_tick(ctx)
    job = pipelines.definitions.defs.resolve_job_def("ingest_team")
    for request in result.run_requests:
        outcome = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
        assert outcome.success
        [check] = outcome.get_asset_check_evaluations()
        assert check.passed, check.description
    return result.cursor, len(result.run_requests)


def _reference(tmp_path: Path, trees: list[Path]) -> tuple[tuple, set[str]]:
    """Usage totals and record ids of a local ingest of the union of ``trees``."""
    union = tmp_path / "union"
    for tree in trees:
        shutil.copytree(tree, union, dirs_exist_ok=True)
    state = StateStore(tmp_path / "ref.duckdb")
    lance = LanceStore(tmp_path / "ref-lance")
    run_processors([UsageProcessor(), MemoryProcessor(lance)], union, state)
    shutil.rmtree(union)
    with state.connect() as conn:
        totals = conn.execute(TOTALS).fetchone()
    return totals, {r["id"] for r in lance.records_where("true", ["id"])}


def _central_view(home: Path, team_uri_location) -> tuple[tuple, set[str], dict]:
    state = StateStore(home / "state.duckdb")
    with state.connect() as conn:
        totals = conn.execute(TOTALS).fetchone()
        by = dict(conn.execute("SELECT user_name || '@' || coalesce(machine, '?'), count(*) FROM usage_messages "
                               "GROUP BY ALL").fetchall())
    lance = LanceStore(team_uri_location.child("lance"))
    return totals, {r["id"] for r in lance.records_where("true", ["id"])}, by


def test_two_machines_push_and_the_central_ingest_equals_a_local_one(s3_location, tmp_path, monkeypatch):
    team_uri = s3_location.uri
    tree_a = tmp_path / "a-tree"
    shutil.copytree(SAMPLES, tree_a)
    generate_corpus(tree_a, sessions=6, projects=2, seed=1, turns=3)
    tree_b = tmp_path / "b-tree"
    shutil.copytree(tree_a / SAMPLE_PROJECT, tree_b / SAMPLE_PROJECT)  # the same sessions, synced: same pack
    generate_corpus(tree_b, sessions=6, projects=2, seed=2, turns=3)
    homes = {"a": tmp_path / "a-home", "b": tmp_path / "b-home"}
    _archive(homes["a"], tree_a)
    _archive(homes["b"], tree_b)
    for name, user in (("a", "alice"), ("b", "bob")):
        done = _push(homes[name], team_uri, user, f"{user}-laptop")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["packs_sent"] + json.loads(done.stdout)["packs_present"] == 3
    assert json.loads(_push(homes["b"], team_uri, "bob", "bob-laptop").stdout)["manifests"] == []  # idempotent
    blobs = s3_location.blobs()
    assert len([b for b in blobs.list("packs/")]) == 5  # the shared sample pack is stored once
    assert len(list(blobs.list("manifests/"))) == 2

    central = _central(tmp_path, team_uri, monkeypatch)
    with dg.instance_for_test() as instance:
        cursor, runs = _tick_and_run(instance, None)
        assert runs == 1
        cursor, runs = _tick_and_run(instance, cursor)
        assert runs == 0  # the same manifests are not asked for twice

        want_totals, want_ids = _reference(tmp_path, [tree_a, tree_b])
        totals, ids, by = _central_view(central, s3_location)
        assert totals == want_totals and ids == want_ids
        assert totals[0] > 100 and len(ids) > 100
        assert sum(by.values()) == totals[0]
        assert set(by) == {"alice@alice-laptop", "bob@bob-laptop"}  # every row attributed

        # A session grows on a; the next push sends one pack, the next tick one run, nothing counts twice.
        grown = next((tree_a / "-home-dev-project-000").glob("*.jsonl"))
        grow(grown, n=2, tag="later")
        _archive(homes["a"], tree_a)
        again = json.loads(_push(homes["a"], team_uri, "alice", "alice-laptop").stdout)
        assert (again["packs_sent"], len(again["manifests"])) == (1, 1)
        cursor, runs = _tick_and_run(instance, cursor)
        assert runs == 1
        want_totals, want_ids = _reference(tmp_path / "ref2", [tree_a, tree_b])
        totals, ids, _ = _central_view(central, s3_location)
        assert totals == want_totals and ids == want_ids

    report = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "user", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert {u["user"] for u in json.loads(report.stdout)["users"]} == {"alice", "bob"}
    only = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "machine", "--machine", "bob-laptop",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert [m["machine"] for m in json.loads(only.stdout)["machines"]] == ["bob@bob-laptop"]


@pytest.mark.parametrize("opencode_db", [True, False], ids=["with-opencode-db", "opencode-json-storage-only"])
def test_other_agents_sessions_pushed_count_centrally_as_their_samples_say(s3_location, tmp_path, monkeypatch,
                                                                           agent_home, opencode_db):
    """Codex, Gemini CLI, OpenCode and Qwen sessions are archived, pushed and ingested centrally like
    Claude Code's: the central rows and records equal a local ingest's, attributed to the pusher.
    Without ``opencode.db`` only OpenCode's JSON storage holds its session, whose part files are read
    with their message and session files; pushed again unchanged, nothing counts twice."""
    if not opencode_db:
        for db in (agent_home / OPENCODE_STORAGE).parent.glob("*.db*"):
            db.unlink()
    laptop = agent_settings(tmp_path / "laptop", agent_home)
    store = PackStore.from_settings(laptop)
    files = list(walk_all(found_sources(laptop)))
    run_processors([ArchiveProcessor(store), MemoryProcessor(LanceStore.from_settings(laptop))], laptop.sessions_dir,
                   store.state, files=files)
    want_ids = {r["id"] for r in LanceStore.from_settings(laptop).records_where("true", ["id"])}
    assert any(i.startswith("opencode:") for i in want_ids)
    done = _push(laptop.home, s3_location.uri, "dana", "dana-desktop")
    assert done.returncode == 0, done.stderr
    central = _central(tmp_path, s3_location.uri, monkeypatch)
    with dg.instance_for_test() as instance:
        cursor, runs = _tick_and_run(instance, None)
        assert runs == 1
        run_processors([ArchiveProcessor(store)], laptop.sessions_dir, store.state, files=files)
        assert json.loads(_push(laptop.home, s3_location.uri, "dana", "dana-desktop").stdout)["manifests"] == []
        # OpenCode rewrites a message in place: read alone, its tokens would count again as a row of its own
        message = agent_home / OPENCODE_STORAGE / "message" / EXPECTED[4][1] / "msg_a000000002SYNTH.json"
        message.write_bytes(message.read_bytes() + b" ")
        run_processors([ArchiveProcessor(store)], laptop.sessions_dir, store.state,
                       files=list(walk_all(found_sources(laptop))))
        assert json.loads(_push(laptop.home, s3_location.uri, "dana", "dana-desktop").stdout)["packs_sent"] == 1
        cursor, runs = _tick_and_run(instance, cursor)
        assert runs == 1
    with StateStore(central / "state.duckdb").connect() as conn:
        rows = [(*r[:8], None if r[8] is None else float(r[8])) for r in conn.execute(AGENT_TOTALS).fetchall()]
        who = conn.execute("SELECT DISTINCT user_name, machine FROM usage_messages").fetchall()
    assert rows == EXPECTED
    assert who == [("dana", "dana-desktop")]
    assert {r["id"] for r in LanceStore(s3_location.child("lance")).records_where("true", ["id"])} == want_ids
    assert not list((central / "packs").glob(".team-ingest-*"))  # the scratch copies are gone


def test_a_push_killed_half_way_completes_on_the_next_run_without_duplicates(s3_location, tmp_path, monkeypatch):
    team_uri = s3_location.uri
    tree = tmp_path / "tree"
    generate_corpus(tree, sessions=16, projects=8, seed=3, turns=2)
    home = tmp_path / "home"
    _archive(home, tree)
    child = subprocess.Popen([sys.executable, str(REPO / "tests" / "push_child.py"), "3"], cwd=REPO,
                             env={**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_TEAM_URI": team_uri,
                                  "SESSIONLAKE_USER": "carol", "SESSIONLAKE_MACHINE": "ci-box"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "AT 3", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    blobs = s3_location.blobs()
    assert len(list(blobs.list("packs/"))) == 3 and not list(blobs.list("manifests/"))

    done = _push(home, team_uri, "carol", "ci-box")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["packs_sent"], result["packs_present"], len(result["manifests"])) == (5, 3, 1)
    assert len(list(blobs.list("packs/"))) == 8 and len(list(blobs.list("manifests/"))) == 1
    assert json.loads(_push(home, team_uri, "carol", "ci-box").stdout)["manifests"] == []

    central = _central(tmp_path, team_uri, monkeypatch)
    with dg.instance_for_test() as instance:
        _tick_and_run(instance, None)
    want_totals, _ = _reference(tmp_path, [tree])
    assert _central_view(central, s3_location)[0] == want_totals


def test_the_sensor_ingests_nothing_on_a_machine_that_only_pushes(s3_location, tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "laptop"))
    monkeypatch.setenv("SESSIONLAKE_TEAM_URI", s3_location.uri)
    monkeypatch.delenv("SESSIONLAKE_STORAGE_URI", raising=False)
    s3_location.blobs().put_bytes_if_absent("manifests/20261201T000000000000Z-0123456789abcdef.json", b"{}")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                                      repository_def=pipelines.definitions.defs.get_repository_def(),
                                      resources={"team": TeamResource()})
        result = team_manifest_sensor.evaluate_tick(ctx)
    assert not result.run_requests and "central deployment" in result.skip_message


def test_push_without_a_team_bucket_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SESSIONLAKE_TEAM_URI",)}
    env["SESSIONLAKE_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "push"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "SESSIONLAKE_TEAM_URI" in done.stderr
    env["SESSIONLAKE_TEAM_URI"] = "gs://nope"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "push"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "s3://" in done.stderr


class RefusesPoison(SessionProcessor):
    """Writes one row per line to a DuckDB table whose CHECK refuses a line marked ``poison``, every
    version of a run in one transaction: one version's rows fail the whole commit."""

    name = "poison-check"

    def __init__(self):
        self.rows: list[tuple[str, int, bool]] = []

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        stats = ParseStats()
        rows = [(session_key, line.offset, "poison" in line.obj)
                for line in iter_jsonl(session_path, start_offset, stats)]
        self.rows.extend(rows)
        return ProcessorResult(items_count=len(rows), end_offset=stats.end_offset, bytes_read=stats.bytes_read)

    def commit(self, conn):
        conn.execute("CREATE TABLE IF NOT EXISTS poison_check "
                     "(session_key VARCHAR, line_offset BIGINT, poison BOOLEAN CHECK (NOT poison))")
        with transaction(conn):
            conn.executemany("INSERT INTO poison_check VALUES (?, ?, ?)", self.rows)
        self.rows = []

    def discard(self):
        self.rows = []


@pytest.mark.integration  # a push subprocess and an S3 server
def test_a_bad_version_in_a_pushed_pack_fails_that_version_only(s3_location, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    generate_corpus(tree, sessions=6, projects=2, seed=4, turns=2)
    poisoned = sorted(tree.rglob("*.jsonl"))[0]
    with poisoned.open("a") as f:
        f.write(json.dumps({"type": "user", "poison": True}) + "\n")
    poisoned_key = poisoned.relative_to(tree).as_posix()
    _archive(tmp_path / "laptop", tree)
    assert _push(tmp_path / "laptop", s3_location.uri, "erin", "erin-laptop").returncode == 0
    _central(tmp_path, s3_location.uri, monkeypatch)
    store = PackStore.from_settings(Settings.from_env())
    bucket = s3_location.blobs()
    manifests = [read_manifest(bucket, name) for name in list_manifest_names(bucket)]
    assert sum(len(m.packs) for m in manifests) == 2  # one pack per project: the poisoned one holds others

    result = ingest_manifests(manifests, [RefusesPoison()], store)
    stats = result["poison-check"]
    assert stats["failed_files"] == [poisoned_key]
    [error] = stats["error_files"]
    assert error["error"].startswith("commit failed: ") and "CHECK" in error["error"]
    assert stats["processed"] == len(list(tree.rglob("*.jsonl"))) - 1
    with store.state.connect() as conn:
        stored = dict(conn.execute("SELECT session_key, count(*) FROM poison_check GROUP BY 1").fetchall())
        marked = {r[0] for r in conn.execute("SELECT pack_key FROM team_packs").fetchall()}
    assert set(stored) == {p.relative_to(tree).as_posix() for p in tree.rglob("*.jsonl")} - {poisoned_key}
    poisoned_pack = {p["pack"] for p in result["team"]["failed_packs"]}
    assert len(poisoned_pack) == 1 and len(marked) == 1 and not marked & poisoned_pack  # retried next run
    assert new_manifests(store, manifests) == manifests

    again = ingest_manifests(new_manifests(store, manifests), [RefusesPoison()], store)["poison-check"]
    assert (again["failed_files"], again["processed"]) == ([poisoned_key], 0)  # the others: skipped by hash
    with store.state.connect() as conn:
        assert dict(conn.execute("SELECT session_key, count(*) FROM poison_check GROUP BY 1").fetchall()) == stored
    assert not list((tmp_path / "central" / "packs").glob(".team-ingest-*"))  # the scratch copies are gone
