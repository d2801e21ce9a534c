"""Taking in the other machines' transcripts, through the user's path: ``sessionlake sync --with-transcripts``
as a subprocess, two HOMEs playing machines, on a folder and on the moto S3 server. Checked: the other
machine's text is found by recall, its sessions restore byte for byte and are named by machine, usage
still counts once, a rerun takes in nothing, a damaged pack is named and taken in once whole, and an
archive and memory kept in a bucket take them in too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from resources.state.store import StateStore
from tests.conftest import SAMPLE_PROJECT
from tests.sync_support import (
    _cli,
    _location_files,
    _machine,
    _sync,
    _totals,
    _union_totals,
)

pytestmark = pytest.mark.integration


MARKER = "calibrate the quokka telemetry harness"


def _marker_session(home: Path) -> Path:
    """A session on ``home`` whose text no other machine has: what recall on another machine must find."""
    lines = [
        {"type": "user", "uuid": "u-quokka-1", "parentUuid": None, "sessionId": "s-quokka", "cwd": "/home/dev/quokka",
         "timestamp": "2026-12-01T10:00:00.000Z", "message": {"role": "user", "content": f"how do I {MARKER}?"}},
        {"type": "assistant", "uuid": "a-quokka-1", "parentUuid": "u-quokka-1", "sessionId": "s-quokka",
         "timestamp": "2026-12-01T10:00:05.000Z", "requestId": "req_quokka_1",
         "message": {"id": "msg_quokka_1", "model": "claude-sonnet-4-20250514", "role": "assistant",
                     "content": [{"type": "text", "text": "Run the zero-drift routine on the quokka harness first."}],
                     "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}}},
    ]
    path = home / ".claude" / "projects" / "-home-dev-quokka" / "s-quokka.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _recall(home: Path, uri: str) -> subprocess.CompletedProcess:
    return _cli(home, uri, "recall", "quokka telemetry", "--json")


def _with_transcripts(home: Path, uri: str) -> dict:
    done = _cli(home, uri, "sync", "--with-transcripts", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["transcripts"]


def test_with_transcripts_another_machine_s_sessions_join_this_archive_and_memory_counted_once(tmp_path, sync_uri):
    a = _machine(tmp_path, "laptop", 29, sessions=2, samples=True)
    b = _machine(tmp_path, "desk", 30, sessions=2)
    marker = _marker_session(a)
    union = _union_totals(tmp_path, [a, b])
    assert _with_transcripts(a, sync_uri)["received"]["packs_received"] == 0  # nobody else's yet

    assert _sync(b, sync_uri)["pulled_files"] == 1  # a plain sync: usage only, in and out
    assert _recall(b, sync_uri).returncode == 1
    assert not [n for n in _location_files(sync_uri) if n.startswith("manifests/")
                and json.loads(_location_files(sync_uri)[n])["machine"] == "desk"]

    got = _with_transcripts(b, sync_uri)
    received = got["received"]
    assert got["packs_sent"] > 0 and received["manifests"] == 1 and received["packs_received"] > 0
    assert received["versions"] > 0 and received["records"] > 0 and received["errors"] == []
    hits = _recall(b, sync_uri)
    assert hits.returncode == 0, hits.stderr
    assert MARKER in hits.stdout  # laptop's text, found on desk as soon as the sync returned

    restored = tmp_path / "restored"
    done = _cli(b, sync_uri, "restore", "--project", "-home-dev-quokka", "--to", str(restored))
    assert done.returncode == 0, done.stderr
    assert (restored / "-home-dev-quokka" / "s-quokka.jsonl").read_bytes() == marker.read_bytes()
    done = _cli(b, sync_uri, "restore", "--project", SAMPLE_PROJECT, "--to", str(restored))
    assert done.returncode == 0, done.stderr
    originals = sorted(p.relative_to(a / ".claude" / "projects")
                       for p in (a / ".claude" / "projects" / SAMPLE_PROJECT).rglob("*") if p.is_file())
    assert originals
    for rel in originals:
        assert (restored / rel).read_bytes() == (a / ".claude" / "projects" / rel).read_bytes(), rel
    listed = json.loads(_cli(b, sync_uri, "archive", "ls", "--project", "-home-dev-quokka", "--json").stdout)
    assert [(s["session"], s["machine"]) for s in listed["sessions"]] == [("-home-dev-quokka/s-quokka.jsonl",
                                                                            "chip@laptop")]
    own = json.loads(_cli(b, sync_uri, "archive", "ls", "--project", "-home-dev-project-000", "--json").stdout)
    assert {s["machine"] for s in own["sessions"]} >= {"(this machine)"}

    # Counted once: the usage rows come from laptop's sync file, never from its packs.
    assert _totals(b) == union
    with StateStore(b / ".sessionlake" / "state.duckdb").connect() as conn:
        assert conn.execute("SELECT count(*) FROM usage_messages WHERE starts_with(session_key, ?)",
                            ["-home-dev-quokka/"]).fetchone()[0] == 0

    # Reruns are idle: nothing taken in twice, nothing sent back; laptop takes in desk's once.
    again = _with_transcripts(b, sync_uri)
    assert (again["packs_sent"], again["manifests"]) == (0, [])
    assert (again["received"]["manifests"], again["received"]["packs_received"], again["received"]["versions"]) \
        == (0, 0, 0)
    back = _with_transcripts(a, sync_uri)["received"]
    assert back["manifests"] == 1 and back["packs_received"] > 0
    assert _with_transcripts(a, sync_uri)["received"]["manifests"] == 0
    for home in (a, b):
        assert _totals(home) == union
    machines = [json.loads(data)["machine"] for name, data in _location_files(sync_uri).items()
                if name.startswith("manifests/")]
    assert sorted(machines) == ["desk", "laptop"]


def test_with_transcripts_a_damaged_pack_is_named_and_taken_in_by_the_next_sync(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    uri = str(shared)
    a = _machine(tmp_path, "laptop", 31, sessions=1)
    b = _machine(tmp_path, "desk", 32, sessions=1)
    _marker_session(a)
    _with_transcripts(a, uri)
    pack = sorted((shared / "packs").iterdir())[0]
    good = pack.read_bytes()
    pack.write_bytes(good[: len(good) // 2])  # a sync copy of the folder that stopped half way

    done = _cli(b, uri, "sync", "--with-transcripts")
    assert done.returncode == 1
    assert "transcripts: manifests/" in done.stderr and "chip@laptop" in done.stderr
    assert "tried again next sync" in done.stderr and "Traceback" not in done.stderr
    assert not list((b / ".sessionlake" / "packs").glob(".*"))  # no half pack left behind
    assert _totals(b) == _union_totals(tmp_path, [a, b])  # usage does not wait for transcripts

    pack.write_bytes(good)
    again = _with_transcripts(b, uri)["received"]
    assert again["manifests"] == 1 and again["errors"] == []
    assert MARKER in _recall(b, uri).stdout


def test_with_transcripts_into_an_archive_and_memory_kept_in_a_bucket(tmp_path, s3_location):
    shared = tmp_path / "shared"
    shared.mkdir()
    uri = str(shared)
    a = _machine(tmp_path, "laptop", 33, sessions=1)
    b = _machine(tmp_path, "desk", 34, sessions=1)
    marker = _marker_session(a)
    store = {"SESSIONLAKE_STORAGE_URI": f"{s3_location.uri}/desk-store"}  # desk keeps packs and Lance in a bucket
    _with_transcripts(a, uri)
    got = _cli(b, uri, "sync", "--with-transcripts", "--json", **store)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["transcripts"]["received"]["packs_received"] > 0
    received = list((shared / "packs").iterdir())
    stored = {b.name for b in s3_location.child("desk-store", "packs").blobs().list("")}
    assert {p.name for p in received} <= stored  # laptop's packs, put in desk's bucket whole
    hits = _cli(b, uri, "recall", "quokka telemetry", "--json", **store)
    assert hits.returncode == 0 and MARKER in hits.stdout, hits.stderr
    done = _cli(b, uri, "restore", "--project", "-home-dev-quokka", "--to", str(tmp_path / "r"), **store)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "-home-dev-quokka" / "s-quokka.jsonl").read_bytes() == marker.read_bytes()
    assert _totals(b) == _union_totals(tmp_path, [a, b])
