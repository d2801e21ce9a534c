"""A failure of the environment is one line naming the path and its file system, with exit 2; ``--debug``
(or ``SESSIONLAKE_DEBUG=1``) shows the traceback."""

import contextlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import SAMPLES
from tests.warehouse_holder import held_by_another_process

pytestmark = pytest.mark.integration


def _small_disk(tmp_path, free: int):
    """A 20 MB tmpfs with ``free`` bytes left, for the data home (needs root, as CI has)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    # mounting a tmpfs needs root, as CI and the development machines have: without it this fails, never skips
    assert os.geteuid() == 0, "this test mounts a 20 MB tmpfs: run it as root (CI does)"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    try:
        with (mount / "filler").open("wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (20 * 2**20 - free))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def full_home(tmp_path):
    yield from _small_disk(tmp_path, 0)


@pytest.fixture
def nearly_full_home(tmp_path):
    """Room for an empty warehouse, not for a run's rows."""
    yield from _small_disk(tmp_path, 1200 * 1024)


def _env(home, tmp_path) -> dict[str, str]:
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLES, tree)
    env = {**os.environ, "SESSIONLAKE_HOME": str(home / "home"), "SESSIONLAKE_SESSIONS_DIR": str(tree),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("SESSIONLAKE_DEBUG", None)
    return env


def test_a_full_disk_is_one_line_naming_the_file_system(full_home, tmp_path):
    env = _env(full_home, tmp_path)
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("sessionlake usage: No space left on device: ") and f"file system at {full_home}" in line
    debug = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily", "--debug"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    # the empty file the first command's DuckDB could create but not write is no "invalid database" later
    for command in (["usage", "daily"], ["ingest"], ["recall", "anything"]):
        again = subprocess.run([sys.executable, "-m", "pipelines.cli.main", *command], env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2, (command, again.stderr)
        [line] = again.stderr.splitlines()
        assert line.startswith(f"sessionlake {command[0]}: No space left on device: "), line
    capture = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "capture", "--text", "a note"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert capture.returncode == 2
    [line] = capture.stderr.splitlines()
    assert line.startswith("sessionlake capture: could not append: No space left on device: ") and \
        f"file system at {full_home}" in line, line


def test_a_disk_that_fills_during_an_ingest_run_blames_no_session_file(nearly_full_home, tmp_path):
    env = _env(nearly_full_home, tmp_path)
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    # one line, not Dagster's step-failure log (about 90 lines): that is on the instance, and under --debug
    [line] = out.stderr.splitlines()
    assert line.startswith("sessionlake ingest: run ") and "No space left on device: " in line
    assert f"file system at {nearly_full_home}" in line
    debug = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "ingest", "--debug"], env=env,
                           capture_output=True, text=True, timeout=300)
    # Dagster's own log: the step's failure, or the run's when the disk is full before the step starts
    # (where a nearly full disk fills first depends on when SQLite checkpoints)
    assert debug.returncode != 0 and ("STEP_FAILURE" in debug.stderr or "RUN_FAILURE" in debug.stderr), debug.stderr
    assert "No space left on device" in debug.stderr, debug.stderr


def test_an_ingest_gives_up_on_a_held_warehouse_in_one_line_and_the_next_one_completes(tmp_path):
    env = {**_env(tmp_path, tmp_path), "SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC": "1"}
    state = tmp_path / "home" / "state.duckdb"
    state.parent.mkdir(parents=True)
    with held_by_another_process(state) as holder:
        out = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"sessionlake ingest: the warehouse {state} is held by process {holder.pid} "), line
    assert line.endswith("let it finish, then run the command again"), line
    again = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "ingest", "--only", "usage"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "(success)" in again.stdout, again.stderr
