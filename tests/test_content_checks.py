"""Content checks where metadata can lie: a file rewritten at the same size with its mtime put back
(``touch -r``) passes the default stat precheck; ``ingest --all`` hashes every file and reads it again."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _output_tokens(env) -> int:
    return json.loads(_cli("usage", "daily", "--json", env=env).stdout)["totals"]["outputTokens"]


def test_ingest_all_reads_a_same_size_rewrite_whose_mtime_was_put_back(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", env=env).returncode == 0
    before = _output_tokens(env)
    path = next(settings.sessions_dir.rglob("ba79134d*.jsonl"))
    data = path.read_bytes()
    stat = path.stat()
    rewritten = data.replace(b'"output_tokens":5,', b'"output_tokens":7,', 1)
    assert rewritten != data and len(rewritten) == len(data)
    path.write_bytes(rewritten)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r: the stat precheck sees no change

    quick = _cli("ingest", "--json", env=env)
    assert quick.returncode == 0 and json.loads(quick.stdout)["run_id"] is None  # the documented blind spot
    full = _cli("ingest", "--all", "--json", env=env)
    assert full.returncode == 0, full.stderr
    assets = json.loads(full.stdout)["assets"]
    for asset in ("usage_messages", "memory_records", "session_archive"):
        assert assets[asset]["files_processed"] == 1, (asset, assets[asset])
    assert _output_tokens(env) == before + 2
    again = json.loads(_cli("ingest", "--all", "--json", env=env).stdout)["assets"]
    assert again.get("usage_messages", {}).get("files_processed", 0) == 0  # hashed, unchanged, not read
