"""A storage setting that cannot be used, as a user meets it: every command that touches the storage, run
as the console script, exits non-zero with one line on stderr naming what is wrong and the variable to
fix, never a traceback, and nothing is written or lost. Unsupported and malformed URIs, an endpoint
nothing answers at (a closed loopback port), a plain-HTTP endpoint not allowed, a missing bucket; and
`memory rebuild` of a broken table in a bucket (the moto server), which sets it aside whole and rebuilds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from resources.memory.schema import RECORDS
from resources.state.store import StateStore
from tests.s3_support import CREDENTIALS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
STORAGE_COMMANDS = {  # what each prints its errors as -> how it is run
    "sessionlake ingest": ["ingest"],
    "sessionlake memory rebuild": ["memory", "rebuild"],
    "sessionlake maintain": ["maintain"],
    "sessionlake recall": ["recall", "anything"],
    "sessionlake archive ls": ["archive", "ls"],
    "sessionlake archive verify": ["archive", "verify"],
    "sessionlake archive gc": ["archive", "gc"],
    "sessionlake restore": ["restore", "-home-me-app", "--to", "restored"],
    "sessionlake dev": ["dev"],
}
CLOSED_PORT = "http://127.0.0.1:1"
"""Nothing listens on port 1 of loopback: a connection is refused at once."""


def _cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env={**env, "PYTHONPATH": str(REPO)},
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def _env(settings: Settings, **extra: str) -> dict:
    """The process environment for the test's data home, AWS credentials, and ``extra``; no other AWS_* value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SESSIONLAKE_TEAM_URI"}
    return {**env, "DAGSTER_HOME": str(settings.home / "dagster"), **CREDENTIALS, **extra}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_line(result: subprocess.CompletedProcess, prefix: str, *wanted: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"{prefix}: "), result.stderr
    for text in wanted:
        assert text in result.stderr, result.stderr
    assert result.stdout == ""


def test_an_unusable_storage_uri_stops_every_command_in_one_line(settings, tmp_path):
    uri, why = "ftp://x/y", "scheme 'ftp://' is not supported"
    env = _env(settings, SESSIONLAKE_STORAGE_URI=uri)
    before = _files(tmp_path)
    commands = {**STORAGE_COMMANDS, "sessionlake usage": ["usage", "daily"], "sessionlake prices": ["prices"],
                "sessionlake push": ["push"]}
    for prefix, command in commands.items():
        result = _cli(*command, env=env, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        _one_line(result, prefix, f"SESSIONLAKE_STORAGE_URI={uri!r}", why, "use s3://BUCKET[/PREFIX]")
    assert _files(tmp_path) == before, "nothing written, nothing lost"


@pytest.mark.parametrize(("uri", "why"), [("s3://", "names no bucket"), ("my-bucket/sessions", "it has no scheme")])
def test_each_way_a_storage_uri_is_unusable_is_named(settings, tmp_path, uri, why):
    """Every command reads the URI through the same settings loader (above); each defect is named."""
    result = _cli("archive", "ls", env=_env(settings, SESSIONLAKE_STORAGE_URI=uri), cwd=tmp_path)
    assert result.returncode == 2
    _one_line(result, "sessionlake archive ls", f"SESSIONLAKE_STORAGE_URI={uri!r}", why, "use s3://BUCKET[/PREFIX]")


def test_an_unusable_team_uri_names_its_own_variable(settings, tmp_path):
    result = _cli("push", env=_env(settings, SESSIONLAKE_TEAM_URI="s3://"), cwd=tmp_path)
    assert result.returncode == 2
    _one_line(result, "sessionlake push", "SESSIONLAKE_TEAM_URI='s3://' names no bucket")


WITHOUT_BOTO3 = ("import sys; sys.modules['boto3'] = None; from pipelines.cli.main import main; "
                 "sys.exit(main(sys.argv[1:]))")
"""The console script on a machine where boto3 (the ``s3`` extra) is not installed."""


def test_a_bucket_without_the_s3_extra_installed_is_one_line_naming_it(settings, tmp_path):
    env = {**_env(settings, SESSIONLAKE_STORAGE_URI="s3://sessions/me"), "PYTHONPATH": str(REPO)}
    for prefix, command in {"sessionlake archive ls": ["archive", "ls"], "sessionlake recall": ["recall", "x"],
                            "sessionlake push": ["push"]}.items():
        result = subprocess.run([sys.executable, "-c", WITHOUT_BOTO3, *command], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, env={**env, "SESSIONLAKE_TEAM_URI": "s3://team/x"})
        assert result.returncode == 2, (command, result.stderr)
        _one_line(result, prefix, "s3://sessions/me", "buckets need boto3", "pip install 'sessionlake[s3]'")


def test_an_endpoint_nothing_answers_at_stops_storage_commands_at_once(settings, tmp_path):
    env = _env(settings, SESSIONLAKE_STORAGE_URI="s3://sessions/me", AWS_ENDPOINT_URL=CLOSED_PORT)
    before = _files(tmp_path)
    for prefix, command in STORAGE_COMMANDS.items():
        started = time.monotonic()
        result = _cli(*command, env=env, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        _one_line(result, prefix, "SESSIONLAKE_STORAGE_URI=s3://sessions/me", f"cannot reach {CLOSED_PORT}",
                  "check AWS_ENDPOINT_URL")
        assert time.monotonic() - started < 30, command
    push = _cli("push", env={**env, "SESSIONLAKE_TEAM_URI": "s3://team/x"}, cwd=tmp_path)
    assert push.returncode == 2  # an unreachable bucket is the environment, as for every command
    _one_line(push, "sessionlake push", f"cannot reach {CLOSED_PORT}")
    assert _files(tmp_path) == before, "nothing written, nothing lost"


def test_a_usage_only_ingest_does_not_need_the_storage(settings, tmp_path):
    env = _env(settings, SESSIONLAKE_STORAGE_URI="s3://sessions/me", AWS_ENDPOINT_URL=CLOSED_PORT)
    ingest = _cli("ingest", "--only", "usage", env=env, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    report = _cli("usage", "daily", "--json", env=env, cwd=tmp_path)
    assert report.returncode == 0 and '"totalTokens": 4528615' in report.stdout, report.stderr


def test_a_plain_http_endpoint_needs_aws_allow_http_and_an_endpoint_must_be_a_url(settings, tmp_path):
    env = _env(settings, SESSIONLAKE_STORAGE_URI="s3://sessions/me", AWS_ENDPOINT_URL=CLOSED_PORT)
    del env["AWS_ALLOW_HTTP"]
    result = _cli("recall", "anything", env=env, cwd=tmp_path)
    assert result.returncode == 2
    _one_line(result, "sessionlake recall", f"AWS_ENDPOINT_URL='{CLOSED_PORT}' is plain HTTP", "AWS_ALLOW_HTTP=true")
    result = _cli("recall", "anything", env={**env, "AWS_ENDPOINT_URL": "127.0.0.1:9000"}, cwd=tmp_path)
    assert result.returncode == 2
    _one_line(result, "sessionlake recall", "AWS_ENDPOINT_URL='127.0.0.1:9000' is not a URL")


def test_a_missing_bucket_is_named(settings, tmp_path, s3_server):
    env = _env(settings, SESSIONLAKE_STORAGE_URI="s3://never-created/me", AWS_ENDPOINT_URL=s3_server.endpoint)
    result = _cli("archive", "ls", env=env, cwd=tmp_path)
    assert result.returncode == 2
    _one_line(result, "sessionlake archive ls", "bucket 'never-created' does not exist",
              "fix SESSIONLAKE_STORAGE_URI")


def test_memory_rebuild_sets_a_broken_table_in_a_bucket_aside_and_rebuilds_it(settings, tmp_path, s3_location):
    env = _env(settings, SESSIONLAKE_STORAGE_URI=s3_location.uri, AWS_ENDPOINT_URL=s3_location.options["endpoint"])
    remote = settings._replace(storage_uri=s3_location.uri)
    lance = LanceStore.from_settings(remote)
    run_processors([MemoryProcessor(lance), ArchiveProcessor(PackStore.from_settings(remote))],
                   remote.sessions_dir, StateStore.from_settings(remote))
    healthy = _cli("memory", "rebuild", "--json", env=env, cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stderr
    records = lance.count(RECORDS)
    assert records > 0

    tables = s3_location.child("lance").blobs()
    for blob in tables.list(f"{RECORDS}.lance/_versions/"):
        tables.delete(blob.name)  # Lance can no longer open it
    kept = {b.name[len(f"{RECORDS}.lance/"):]: b.size for b in tables.list(f"{RECORDS}.lance/")}
    rebuilt = _cli("memory", "rebuild", "--json", env=env, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    aside = report["set_aside"][RECORDS]
    assert aside.startswith(f"{s3_location.uri}/lance/broken/{RECORDS}.lance-") and report["errors"] == []
    prefix = aside[len(f"{s3_location.uri}/lance/"):] + "/"
    assert {b.name[len(prefix):]: b.size for b in tables.list(prefix)} == kept, "every object kept, byte for byte"
    assert LanceStore.from_settings(remote).count(RECORDS) == records, "records re-derived from the archive"


def test_an_endpoint_lost_mid_run_ends_ingest_in_one_line_and_the_next_run_completes(settings, tmp_path):
    from tests.s3_support import S3Server
    from tests.test_live_daemon import write_tree

    sessions = tmp_path / "tree"  # "projects" holds the samples
    expected = write_tree(sessions)
    files = sum(fig["files"] for fig in expected.values())
    server = S3Server().start()  # one of its own: this test closes its endpoint
    try:
        bucket = server.new_bucket("lost-mid-run")
        blobs = server.location(bucket).blobs()
        env = {**_env(settings, SESSIONLAKE_STORAGE_URI=f"s3://{bucket}/me", AWS_ENDPOINT_URL=server.endpoint),
               "SESSIONLAKE_SESSIONS_DIR": str(sessions)}
        env.pop("SESSIONLAKE_DEBUG", None)
        ingest = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not list(blobs.list("me/")) and time.monotonic() < deadline:  # the run has begun to write
                time.sleep(0.02)
            server.stop()
            out, err = ingest.communicate(timeout=300)
        finally:
            ingest.kill()
        assert ingest.returncode == 2, (out, err)
        [line] = err.splitlines()
        assert line.startswith("sessionlake ingest: ") and "Traceback" not in err, err
        assert f"cannot reach the storage bucket at {server.endpoint}" in line, line

        server = S3Server(port=server.port).start()  # the endpoint is back, the bucket as it was left
        again = _cli("ingest", "--json", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["success"]
    finally:
        server.stop()
    with StateStore.from_settings(settings).connect(read_only=True) as conn:
        done = dict(conn.execute("SELECT processor_name, count(*) FROM session_processor_state GROUP BY 1").fetchall())
        responses = conn.execute("SELECT count(*) FROM usage_messages").fetchone()[0]
    assert done == {"usage": files, "memory": files, "archive": files}, done
    assert responses == sum(fig["responses"] for fig in expected.values())
