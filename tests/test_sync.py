"""Personal sync through the user's path: ``sessionlake sync`` as a subprocess, two or three HOMEs playing
machines, against a folder and against a real S3 API server on loopback (moto).

Checked: after every machine has synced, each warehouse's totals equal one ingest of the union of
their session files; a session two machines hold counts once, attributed on every machine to the one
that synced it first; a sync SIGKILLed at seeded random moments completes on the next run with every
response in the location once; a damaged or foreign file is named and skipped, nothing else lost;
machines whose wall clocks disagree change nothing; no prompt text, path or branch is in the location;
two machines syncing at the same moment; the reports' machine options and the synced-machines line;
the status line's "today" over every machine, with the location gone; a team's central ingest reading
sync files beside pushed packs.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.corpus import generate_corpus
from resources.state.store import StateStore
from resources.sync.files import FileName
from resources.sync.location import open_location
from tests.conftest import SAMPLE_PROJECT, SAMPLES
from tests.sync_support import (
    REPO,
    _cli,
    _env,
    _location_files,
    _machine,
    _sync,
    _totals,
    _union_totals,
)

pytestmark = pytest.mark.integration

def test_every_machine_totals_the_union_and_a_shared_session_counts_once(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 1, samples=True)
    b = _machine(tmp_path, "desk", 2, samples=True)  # the sample sessions are on both: ~/.claude copied over
    c = _machine(tmp_path, "spare", 3)
    union = _union_totals(tmp_path, [a, b, c])

    first = _sync(a, sync_uri)
    assert first["pulled_files"] == 0 and first["pushed_rows"] == _totals(a)[0]
    _sync(b, sync_uri)
    _sync(c, sync_uri)
    assert _totals(c) == union  # the last to sync has everything
    for home in (a, b):
        _sync(home, sync_uri)
    for home in (a, b, c):
        assert _totals(home) == union
        assert _sync(home, sync_uri)["pushed_rows"] == 0  # nothing new: nothing pushed, nothing pulled twice
        assert _totals(home) == union

    # The sample sessions, on laptop and desk, are laptop's everywhere: it synced them first.
    for home in (a, b, c):
        report = json.loads(_cli(home, sync_uri, "usage", "machine", "--json").stdout)
        machines = {m["machine"]: m for m in report["machines"]}
        assert set(machines) == {"chip@laptop", "chip@desk", "chip@spare"}
        assert sum(m["responses"] for m in machines.values()) == union[0]
        samples = json.loads(_cli(home, sync_uri, "usage", "project", "--json", "--by-machine").stdout)
        [row] = [p for p in samples["projects"] if p["project"] == SAMPLE_PROJECT]
        assert [m["machine"] for m in row["machines"]] == ["chip@laptop"]
        only = json.loads(_cli(home, sync_uri, "usage", "daily", "--json", "--machine", "desk").stdout)
        assert only["totals"]["totalTokens"] == machines["chip@desk"]["totalTokens"]

    done = _cli(a, sync_uri, "usage", "daily")
    assert done.returncode == 0
    assert "synced machines: chip@desk" in done.stderr and "chip@spare" in done.stderr


def _own_keys(uri: str, machine: str) -> list[str]:
    keys = []
    for name, data in _location_files(uri).items():
        parsed = FileName.parse(name)
        if parsed and parsed.source.startswith(f"{machine}/"):
            keys += pq.read_table(io.BytesIO(data), columns=["dedup_key"]).column(0).to_pylist()
    return keys


def test_a_sync_killed_anywhere_is_finished_by_the_next(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 4, sessions=8)
    b = _machine(tmp_path, "desk", 5, sessions=4)
    _sync(b, sync_uri)
    started = time.monotonic()
    _cli(a, sync_uri, "sync", "--json", SESSIONLAKE_HOME=str(tmp_path / "timing-home"))
    full = time.monotonic() - started
    rng = random.Random(20261204)
    projects = a / ".claude" / "projects"
    for cycle in range(4):
        generate_corpus(projects / f"-more-{cycle}", sessions=2, projects=1, seed=100 + cycle, turns=3)
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "sync"], env=_env(a, sync_uri),
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(full * rng.uniform(0.3, 1.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _sync(a, sync_uri)
    _sync(b, sync_uri)
    union = _union_totals(tmp_path, [a, b])
    assert _totals(a) == union and _totals(b) == union
    keys = _own_keys(sync_uri, "laptop")
    assert len(keys) == len(set(keys))  # every response of laptop in the location once
    with StateStore(a / ".sessionlake" / "state.duckdb").connect() as conn:
        assert len(keys) == conn.execute("SELECT count(*) FROM usage_messages WHERE machine = 'laptop'").fetchone()[0]


def test_a_damaged_or_foreign_file_is_named_and_skipped_and_nothing_else_is_lost(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 6)
    b = _machine(tmp_path, "desk", 7)
    pushed = _sync(b, sync_uri)["pushed_file"]
    blobs = open_location(sync_uri)
    good = blobs.get_bytes(pushed)
    damaged = "usage/stranger/0123456789ab/0000000001-0000000001-00000000deadbeef.parquet"
    blobs.put_bytes_if_absent(damaged, good[: len(good) // 2])
    blobs.put_bytes_if_absent("usage/notes.txt", b"my shopping list")
    blobs.put_bytes_if_absent("usage/.DS_Store", b"\0\0")

    done = _cli(a, sync_uri, "sync")
    assert done.returncode == 1
    assert damaged in done.stderr and "does not match its name" in done.stderr
    assert "not a sync file, left alone: usage/notes.txt" in done.stderr
    assert ".DS_Store" not in done.stderr
    assert _totals(a) == _union_totals(tmp_path, [a, b])  # desk's file was read all the same
    assert blobs.get_bytes("usage/notes.txt") == b"my shopping list"
    again = _cli(a, sync_uri, "sync")
    assert again.returncode == 1 and damaged in again.stderr  # still reported, still skipped


def test_clocks_that_disagree_change_no_total_and_no_attribution(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    uri = str(shared)
    a = _machine(tmp_path, "laptop", 8, samples=True)
    b = _machine(tmp_path, "desk", 9, samples=True)
    _sync(a, uri)
    # desk's clock runs a day ahead: its files (a NAS or Dropbox keeps the writer's times) say tomorrow,
    # and laptop's file looks a week old.
    for path in shared.rglob("*.parquet"):
        os.utime(path, (time.time() - 7 * 86400,) * 2)
    _sync(b, uri)
    for path in (shared / "usage" / "desk").rglob("*.parquet"):
        os.utime(path, (time.time() + 86400,) * 2)
    _sync(a, uri)
    _sync(b, uri)
    union = _union_totals(tmp_path, [a, b])
    for home in (a, b):
        assert _totals(home) == union
        with StateStore(home / ".sessionlake" / "state.duckdb").connect() as conn:
            assert conn.execute("SELECT DISTINCT machine FROM usage_messages WHERE project = ?",
                                [SAMPLE_PROJECT]).fetchall() == [("laptop",)]
    line = _cli(a, uri, "usage", "daily").stderr
    assert "chip@desk just now" in line or "chip@desk 1m ago" in line  # never "in a day"


def test_nothing_private_leaves_the_machine(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 10, samples=True)
    _sync(a, sync_uri)
    secrets = [str(tmp_path), "/home/dev/", "/Users/chip", "refactor the parser", "gitBranch", ".jsonl"]
    for line in (SAMPLES / SAMPLE_PROJECT).rglob("*.jsonl"):
        for raw in line.read_text().splitlines():
            obj = json.loads(raw)
            content = (obj.get("message") or {}).get("content")
            if obj.get("type") == "user" and isinstance(content, str) and len(content) > 20:
                secrets.append(content[:40])
            if obj.get("cwd"):
                secrets.append(obj["cwd"])
    files = _location_files(sync_uri)
    assert files
    for name, data in files.items():
        text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str) + name
        text += str(pq.ParquetFile(io.BytesIO(data)).schema_arrow.metadata)
        for secret in set(secrets):
            assert secret not in text and secret.encode() not in data, (name, secret)


def test_hashed_project_names_are_named_again_where_the_project_is_known(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    uri = str(shared)
    hashed = {"SESSIONLAKE_SYNC_PROJECTS": "hash", "SESSIONLAKE_SYNC_KEY": "correct horse"}
    a = _machine(tmp_path, "laptop", 11, samples=True)
    b = _machine(tmp_path, "desk", 12)
    _sync(a, uri, **hashed)
    for data in _location_files(uri).values():
        assert SAMPLE_PROJECT.encode() not in data
        projects = set(pq.read_table(io.BytesIO(data), columns=["project"]).column(0).to_pylist())
        assert all(p.startswith("#") for p in projects)
    _sync(b, uri, **hashed)
    with StateStore(b / ".sessionlake" / "state.duckdb").connect() as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT project FROM usage_messages").fetchall()}
    # desk has -home-dev-project-000/001 itself, so laptop's rows there carry the name; the samples do not.
    assert {"-home-dev-project-000", "-home-dev-project-001"} <= names
    assert SAMPLE_PROJECT not in names and any(n.startswith("#") for n in names)
    assert _totals(b) == _union_totals(tmp_path, [a, b])
    no_key = _cli(a, uri, "sync", SESSIONLAKE_SYNC_PROJECTS="hash")
    assert no_key.returncode == 2 and "SESSIONLAKE_SYNC_KEY" in no_key.stderr


def test_two_machines_syncing_at_the_same_moment(tmp_path, sync_uri):
    homes = [_machine(tmp_path, name, seed, samples=True) for name, seed in (("laptop", 13), ("desk", 14))]
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "sync", "--json"],
                              env=_env(home, sync_uri), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for home in homes]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for home in homes:
        _sync(home, sync_uri)
    union = _union_totals(tmp_path, homes)
    attributed = []
    for home in homes:
        assert _totals(home) == union
        with StateStore(home / ".sessionlake" / "state.duckdb").connect() as conn:
            attributed.append(conn.execute("SELECT DISTINCT machine FROM usage_messages WHERE project = ?",
                                           [SAMPLE_PROJECT]).fetchall())
    assert attributed[0] == attributed[1] and len(attributed[0]) == 1  # both machines agree on who was first


def test_sync_without_a_location_or_with_a_relative_one_is_a_setting_error(tmp_path):
    home = _machine(tmp_path, "laptop", 15, sessions=1)
    env = _env(home, "")
    env.pop("SESSIONLAKE_SYNC_URI")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "sync"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "SESSIONLAKE_SYNC_URI" in done.stderr
    relative = _cli(home, "shared/folder", "sync")
    assert relative.returncode == 2 and "relative" in relative.stderr and "Traceback" not in relative.stderr
    missing = _cli(home, str(tmp_path / "not-mounted"), "sync")
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_with_transcripts_sends_the_packs_too_and_says_so(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 16, samples=True)
    done = _cli(a, sync_uri, "sync", "--with-transcripts", "--json")
    assert done.returncode == 0, done.stderr
    assert "whole transcripts" in done.stderr
    sent = json.loads(done.stdout)["transcripts"]
    names = list(_location_files(sync_uri))
    assert sent["packs_sent"] > 0 and sum(n.startswith("packs/") for n in names) == sent["packs_sent"]
    assert [n for n in names if n.startswith("manifests/")]
    b = _machine(tmp_path, "desk", 17)
    plain = _cli(b, sync_uri, "sync")  # the packs and manifests beside the usage files are no concern of a sync
    assert plain.returncode == 0 and "left alone" not in plain.stderr
    assert _totals(b) == _union_totals(tmp_path, [a, b])
    again = json.loads(_cli(a, sync_uri, "sync", "--with-transcripts", "--json").stdout)["transcripts"]
    assert again["packs_sent"] == 0


def test_the_status_line_shows_today_for_all_machines_from_the_last_sync_without_the_location(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    a = _machine(tmp_path, "laptop", 18, sessions=1)
    b = _machine(tmp_path, "desk", 19, sessions=1)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    today = {"type": "assistant", "sessionId": "today-1", "uuid": "u-today-1", "timestamp": now,
             "requestId": "req_today_1", "message": {"id": "msg_today_1", "model": "claude-sonnet-4-20250514",
             "role": "assistant", "content": [{"type": "text", "text": "done"}],
             "usage": {"input_tokens": 1000, "output_tokens": 50000, "cache_creation_input_tokens": 0,
                       "cache_read_input_tokens": 0}}}
    (b / ".claude" / "projects" / "-home-dev-today").mkdir()
    (b / ".claude" / "projects" / "-home-dev-today" / "today-1.jsonl").write_text(json.dumps(today) + "\n")
    _sync(b, str(shared))
    _sync(a, str(shared))
    shutil.rmtree(shared)  # the location is gone (offline): the prompt's path never needs it

    def line(home: Path) -> str:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "statusline", "-z", "UTC", "--no-cache"],
                              input="{}", env=_env(home, str(shared)), cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split(" session / ")[1].split(" today")[0]

    assert line(a) == line(b) != "$0.00"


def test_the_team_central_ingest_reads_sync_files_beside_pushed_packs(tmp_path, s3_location, monkeypatch):
    import dagster as dg

    from tests.test_team import _archive, _central, _push, _tick_and_run

    team_uri = s3_location.uri
    a = _machine(tmp_path, "laptop", 20, samples=True)  # syncs usage only to the team bucket
    b = _machine(tmp_path, "desk", 21, samples=True)  # pushes its archive, as before
    _sync(a, team_uri)
    _archive(b / ".sessionlake", b / ".claude" / "projects")
    pushed = _push(b / ".sessionlake", team_uri, "bob", "desk")
    assert pushed.returncode == 0, pushed.stderr
    union = _union_totals(tmp_path, [a, b])
    central = _central(tmp_path, team_uri, monkeypatch)
    with dg.instance_for_test() as instance:
        cursor, runs = _tick_and_run(instance, None)
        assert runs == 1 and _totals(central, "state.duckdb") == union
        generate_corpus(a / ".claude" / "projects" / "-later", sessions=1, projects=1, seed=22, turns=2)
        _sync(a, team_uri)  # only a sync file is new: the sensor asks for a run all the same
        cursor, runs = _tick_and_run(instance, cursor)
        assert runs == 1
        assert _tick_and_run(instance, cursor)[1] == 0
    union = _union_totals(tmp_path / "again", [a, b])
    assert _totals(central, "state.duckdb") == union
    with StateStore(central / "state.duckdb").connect() as conn:
        by = dict(conn.execute("SELECT user_name || '@' || machine, count(*) FROM usage_messages GROUP BY ALL")
                  .fetchall())
    assert set(by) == {"chip@laptop", "bob@desk"} and sum(by.values()) == union[0]


def _grow_and_sync(home: Path, uri: str, days: range) -> dict:
    """One new session and one sync per day: one file of this machine per day."""
    report = {}
    for n in days:
        generate_corpus(home / ".claude" / "projects" / f"-day-{n}", sessions=1, projects=1, seed=300 + n, turns=1)
        report = _sync(home, uri)
    return report


def _laptop_files(uri: str) -> list[FileName]:
    return sorted((FileName.parse(n) for n in _location_files(uri) if n.startswith("usage/laptop/")),
                  key=lambda n: (n.first, n.last))


@pytest.mark.parametrize("sync_uri", ["folder"], indirect=True)  # on S3, the killed compaction below finishes one
def test_a_machine_s_many_files_are_compacted_into_one_that_readers_merge_once(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 23, sessions=1)
    b = _machine(tmp_path, "desk", 24, sessions=1)
    _grow_and_sync(a, sync_uri, range(5))
    _sync(b, sync_uri)  # desk has read laptop's first five files
    report = _grow_and_sync(a, sync_uri, range(5, 17))  # the 17th file makes more than 16: compacted
    assert report["compacted"] == 17
    [merged] = _laptop_files(sync_uri)
    assert (merged.first, merged.last) == (1, 17)
    union = _union_totals(tmp_path, [a, b])
    assert _sync(b, sync_uri)["pulled_files"] == 1 and _totals(b) == union
    assert _sync(a, sync_uri)["pulled_files"] == 0 and _totals(a) == union  # its own merged file: read already
    c = _machine(tmp_path, "spare", 25, sessions=1)
    _sync(c, sync_uri)
    assert _totals(c) == _union_totals(tmp_path / "with-spare", [a, b, c])


def _sync_killed_before_delete(home: Path, uri: str, n: int) -> None:
    """A sync SIGKILLed in its compaction, after the compacted file is written and ``n`` deletes (`sync_child`)."""
    child = subprocess.Popen([sys.executable, str(REPO / "tests" / "sync_child.py"), str(n)], cwd=REPO,
                             env=_env(home, uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == f"AT {n}", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)


@pytest.mark.parametrize("sync_uri", ["s3"], indirect=True)  # the folder runs the compaction above, unkilled
def test_a_compaction_killed_half_way_is_finished_by_the_next_sync_and_counts_nothing_twice(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 26, sessions=1)
    b = _machine(tmp_path, "desk", 27, sessions=1)
    _grow_and_sync(a, sync_uri, range(5))
    _sync(b, sync_uri)  # desk has read laptop's first five files
    _grow_and_sync(a, sync_uri, range(5, 16))
    generate_corpus(a / ".claude" / "projects" / "-day-16", sessions=1, projects=1, seed=316, turns=1)
    _sync_killed_before_delete(a, sync_uri, 0)  # the 17th file and the compacted one written, nothing deleted
    files = _laptop_files(sync_uri)
    assert len(files) == 18 and [(n.first, n.last) for n in files if n.first < n.last] == [(1, 17)]
    union = _union_totals(tmp_path, [a, b])
    c = _machine(tmp_path, "spare", 28, sessions=1)
    union_c = _union_totals(tmp_path / "with-spare", [a, b, c])
    # Readers that list the parts and the compacted file together count every response once.
    _sync(b, sync_uri)
    assert _totals(b) == union
    _sync(c, sync_uri)
    assert _totals(c) == union_c

    _sync_killed_before_delete(a, sync_uri, 6)  # the next sync killed while it deletes the parts
    assert len(_laptop_files(sync_uri)) == 12
    done = _sync(a, sync_uri)  # and the one after finishes it
    [merged] = _laptop_files(sync_uri)
    assert (merged.first, merged.last) == (1, 17) and done["pushed_rows"] == 0
    keys = _own_keys(sync_uri, "laptop")
    assert len(keys) == len(set(keys))  # every response of laptop in the location once
    for home, want in ((a, union_c), (b, union_c), (c, union_c)):
        _sync(home, sync_uri)
        assert _totals(home) == want
        assert _sync(home, sync_uri)["pulled_files"] == 0  # nothing left to read twice
