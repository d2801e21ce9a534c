"""The data home is private under any umask: 0700 folders, 0600 files, written through the CLI."""

import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.e2e

# Spill provenance to overflow files (the store refuses writes), then drain the capture inbox: the two
# writers the CLI has no command for, run the way a hook or a notebook would, through the Python API.
SPILL_AND_DRAIN = """
from resources.capture.drain import drain_to_lance
from resources.capture.queue import CaptureQueue
from resources.memory.lance import LanceStore
from resources.config.private_home import make_private
from resources.config.settings import Settings

settings = Settings.from_env()
make_private(settings)  # a script's entry point, like the CLI's and the Dagster resources'
store = LanceStore.from_settings(settings)
assert drain_to_lance(CaptureQueue.from_settings(settings), store).records == 1
store.append_provenance_batch = lambda *args, **kwargs: (_ for _ in ()).throw(OSError("store down"))
queue = store.enable_provenance_queue(coalesce_ms=1, max_queue_size=1)
queue.enqueue([("r1", {"n": 1}), ("r2", {"n": 2})])
queue.stop()
assert list(settings.provenance_overflow_dir.glob("*.jsonl")), "nothing spilled"
"""


def _modes(root):
    """``{relative path: mode}`` of everything under ``root``, the root itself as ``.``."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_everything_the_cli_writes_is_private(settings):
    umask = 0o000  # nothing masked: every mode bit is the code's own (a pass here is a pass under 022 or 077)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # the instance goes under the home

    def run(*args):
        result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300,
                                umask=umask)
        assert result.returncode == 0, result.stderr
        return result

    run("-m", "pipelines.cli.main", "ingest")  # the warehouse, the Lance tables, a pack, the Dagster instance
    run("-m", "pipelines.cli.main", "capture", "--text", "the staging key is in the vault")
    run("-c", SPILL_AND_DRAIN)
    run("-m", "pipelines.cli.main", "maintain")  # compaction rewrites the Lance files
    run("-m", "pipelines.cli.main", "restore", SAMPLE_PROJECT[1:], "--to", str(settings.home / "restored"))

    modes = _modes(settings.home)
    for expected in ("state.duckdb", "lance/records.lance", "packs", "capture", "provenance-overflow",
                     "dagster/dagster.yaml", "dagster/storage", "restored"):
        assert expected in modes, f"{expected} was not written: the test checks nothing there"
    assert any(p.startswith("provenance-overflow/") for p in modes)
    assert any(p.startswith("packs/") and p.endswith(".mpack") for p in modes)
    folders = {p for p in modes if p == "." or (settings.home / p).is_dir()}
    assert {p: m for p, m in modes.items() if p in folders and m != 0o700} == {}
    assert {p: m for p, m in modes.items() if p not in folders and m != 0o600} == {}


def test_a_home_left_open_by_an_older_version_is_tightened_and_nothing_else(tmp_path):
    home = tmp_path / "home"
    (home / "lance" / "records.lance").mkdir(parents=True)
    (home / "lance" / "records.lance" / "data.lance").write_bytes(b"x")
    (home / "state.duckdb").write_bytes(b"x")
    (home / "notes.txt").write_text("the user's own file")
    for path in (home, home / "lance", home / "lance" / "records.lance"):
        path.chmod(0o755)
    for path in (home / "lance" / "records.lance" / "data.lance", home / "state.duckdb", home / "notes.txt"):
        path.chmod(0o644)
    env = {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "--json"], env=env,
                            capture_output=True, text=True, timeout=300, umask=0o022)
    assert result.returncode != 0  # state.duckdb is not a database; what matters is what it did first
    assert _modes(home) == {".": 0o700, "lance": 0o700, "lance/records.lance": 0o700,
                            "lance/records.lance/data.lance": 0o600, "state.duckdb": 0o600, "notes.txt": 0o644}
