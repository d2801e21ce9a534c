"""A failure of the environment is one line naming the path and its file system, with exit 2; ``--debug``
(or ``SESSIONLAKE_DEBUG=1``) shows the traceback."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture
def full_home(tmp_path):
    """A 20 MB tmpfs with no byte free, for the data home (needs root, as CI has)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    try:
        with (mount / "filler").open("wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_naming_the_file_system(full_home, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLES, tree)
    env = {**os.environ, "SESSIONLAKE_HOME": str(full_home / "home"), "SESSIONLAKE_SESSIONS_DIR": str(tree),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("SESSIONLAKE_DEBUG", None)
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("sessionlake usage: No space left on device: ") and f"file system at {full_home}" in line
    debug = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily", "--debug"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
