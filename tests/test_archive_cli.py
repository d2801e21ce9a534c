"""``sessionlake archive verify|gc|ls`` and ``sessionlake restore`` in a fresh process, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.archive_support import grow, ingest, pack_store, rewrite, session_files
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"
SMALL = f"{SAMPLE_PROJECT}/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SESSIONLAKE_HOME": str(settings.home), "SESSIONLAKE_SESSIONS_DIR": str(settings.sessions_dir)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _three_versions(settings, root: Path):
    store = pack_store(settings)
    ingest(store, root)
    grow(root / BIG, tag="two")
    ingest(store, root)
    rewrite(root / SMALL)
    ingest(store, root)
    return store


def test_gc_ls_and_verify(settings, samples_root):
    store = _three_versions(settings, samples_root)

    first = cli(settings, "archive", "gc", "--json")
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)["results"]
    assert (result["packs_before"], result["packs_after"], result["skipped"]) == (3, 1, False)
    again = json.loads(cli(settings, "archive", "gc", "--json", "--", SAMPLE_PROJECT).stdout)["results"][0]
    assert again["skipped"] and again["consolidated_key"] == result["consolidated_key"]

    listing = cli(settings, "archive", "ls")
    assert listing.returncode == 0 and SAMPLE_PROJECT in listing.stdout
    detail = json.loads(cli(settings, "archive", "ls", "--json", SAMPLE_PROJECT.lstrip("-")).stdout)
    assert {s["session"]: s["versions"] for s in detail["sessions"]}[BIG] == 2
    assert [p["state"] for p in detail["packs"]].count("live") == 1

    ok = cli(settings, "archive", "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")

    [pack] = store.live_packs()
    path = store.packs_dir / f"{pack['key'].split(':')[1]}.mpack"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x55
    path.write_bytes(bytes(data))
    bad = cli(settings, "archive", "verify")
    assert bad.returncode == 1
    assert f"FAILED {pack['key']}" in bad.stdout

    unknown = cli(settings, "archive", "gc", "no-such-project")
    assert unknown.returncode == 1 and "no archive for project 'no-such-project'" in unknown.stderr


def test_restore_whole_project_one_session_and_a_past_version(settings, samples_root, tmp_path):
    ingest(pack_store(settings), samples_root)
    first_small = (samples_root / SMALL).read_bytes()
    cutoff = datetime.now(UTC)
    os.utime(samples_root / SMALL, (cutoff.timestamp() - 60, cutoff.timestamp() - 60))
    ingest(pack_store(settings), samples_root)  # same bytes, new mtime: nothing new to archive
    rewrite(samples_root / SMALL)
    _grown = grow(samples_root / BIG, tag="after")
    ingest(pack_store(settings), samples_root)
    cli(settings, "archive", "gc")
    originals = session_files(samples_root)
    shutil.rmtree(samples_root)

    whole = cli(settings, "restore", "--to", str(tmp_path / "all"), "--", SAMPLE_PROJECT)
    assert whole.returncode == 0, whole.stderr
    assert session_files(tmp_path / "all") == originals

    one = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--session", Path(SMALL).stem,
              "--at", cutoff.isoformat(), "--to", str(tmp_path / "one"), "--json")
    assert one.returncode == 0, one.stderr
    assert [json.loads(line)["status"] for line in one.stdout.splitlines()] == ["restored"]
    assert session_files(tmp_path / "one") == {SMALL: first_small}

    conflict = cli(settings, "restore", f"--session={SMALL}", "--to", str(tmp_path / "one"), "--", SAMPLE_PROJECT)
    assert conflict.returncode == 1 and "left alone" in conflict.stderr
    assert (tmp_path / "one" / SMALL).read_bytes() == first_small

    missing = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--session", "nope", "--to", str(tmp_path / "x"))
    assert missing.returncode == 1 and "no archived session 'nope'" in missing.stderr
    bad_time = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--at", "yesterday", "--to", str(tmp_path / "x"))
    assert bad_time.returncode == 2 and "ISO-8601" in bad_time.stderr


def test_project_folder_names_starting_with_a_dash_need_no_double_dash(settings, samples_root, tmp_path):
    store = pack_store(settings)
    ingest(store, samples_root)
    grow(samples_root / BIG, tag="two")
    ingest(store, samples_root)
    originals = session_files(samples_root)

    gc = cli(settings, "archive", "gc", SAMPLE_PROJECT, "--json")
    assert gc.returncode == 0, gc.stderr
    assert [r["repo"] for r in json.loads(gc.stdout)["results"]] == [SAMPLE_PROJECT]
    ls = cli(settings, "archive", "ls", SAMPLE_PROJECT, "--json")
    assert ls.returncode == 0, ls.stderr
    assert {s["session"] for s in json.loads(ls.stdout)["sessions"]} == set(originals)
    verify = cli(settings, "archive", "verify", "--json", SAMPLE_PROJECT)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stderr

    readme_form = cli(settings, "restore", "--", SAMPLE_PROJECT, "--to", str(tmp_path / "readme"))
    assert readme_form.returncode == 0, readme_form.stderr
    assert session_files(tmp_path / "readme") == originals
    plain = cli(settings, "restore", SAMPLE_PROJECT, "--session", Path(SMALL).stem, "--to", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    assert session_files(tmp_path / "plain") == {SMALL: originals[SMALL]}

    typo = cli(settings, "archive", "ls", "-Users-chip-dev-ai-musik")
    assert typo.returncode == 1 and f"closest: {SAMPLE_PROJECT}" in typo.stderr  # nothing found
    unknown_option = cli(settings, "archive", "gc", "--bogus", SAMPLE_PROJECT)
    assert unknown_option.returncode == 2 and "unrecognized arguments: --bogus" in unknown_option.stderr


def test_restore_never_writes_through_a_symlink_under_the_target(settings, samples_root, tmp_path):
    ingest(pack_store(settings), samples_root)
    originals = session_files(samples_root)
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / SAMPLE_PROJECT).symlink_to(outside, target_is_directory=True)

    result = cli(settings, "restore", SAMPLE_PROJECT, "--to", str(target), "--json")
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["status"] for r in rows} == {"refused"} and len(rows) == len(originals)
    assert all(f"{SAMPLE_PROJECT} is a symlink" in r["reason"] for r in rows)
    assert "refused" in result.stderr
    assert list(outside.iterdir()) == []

    # A symlinked file is left alone too; the other files of the project are restored.
    (target / SAMPLE_PROJECT).unlink()
    (target / SAMPLE_PROJECT).mkdir()
    secret = outside / "secret.txt"
    secret.write_text("do not touch")
    (target / SMALL).symlink_to(secret)
    again = cli(settings, "restore", SAMPLE_PROJECT, "--to", str(target))
    assert again.returncode == 1
    statuses = dict(line.split()[:2][::-1] for line in again.stdout.splitlines())
    assert statuses[str(target / SMALL)] == "refused"
    assert [s for p, s in statuses.items() if p != str(target / SMALL)] == ["restored"] * (len(originals) - 1)
    assert secret.read_text() == "do not touch"
    assert {k: v for k, v in session_files(target).items() if k != SMALL} == {
        k: v for k, v in originals.items() if k != SMALL}
