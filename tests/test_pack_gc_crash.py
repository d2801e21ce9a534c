"""Pack GC killed with SIGKILL at each step: the next run completes and nothing archived is lost."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resources.archive.pack_format import pack_path
from tests.archive_support import grow, ingest, pack_store, rewrite, session_files
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.e2e

CHILD = Path(__file__).with_name("pack_gc_child.py")
BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"
SMALL = f"{SAMPLE_PROJECT}/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"


def _kill_gc_at(home: Path, point: str) -> None:
    child = subprocess.Popen([sys.executable, str(CHILD), str(home), SAMPLE_PROJECT, point],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == f"AT {point}", child.stderr.read()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()


@pytest.mark.parametrize("point", ["mid_write", "after_pack_write", "in_txn", "after_commit"])
def test_gc_killed_then_rerun_loses_nothing(settings, samples_root, tmp_path, point):
    store = pack_store(settings)
    ingest(store, samples_root)
    grow(samples_root / BIG, tag="two")
    rewrite(samples_root / SMALL)
    ingest(store, samples_root)
    grow(samples_root / BIG, tag="three")
    ingest(store, samples_root)
    originals = session_files(samples_root)
    live_before = {p["key"] for p in store.live_packs(SAMPLE_PROJECT)}
    assert len(live_before) == 3

    _kill_gc_at(settings.home, point)

    # after the crash: every index row resolves, every live pack is intact, nothing restores wrong
    report = store.verify()
    assert report["ok"], report["problems"]
    live_after_crash = {p["key"] for p in store.live_packs(SAMPLE_PROJECT)}
    if point == "after_commit":
        assert len(live_after_crash) == 1
    else:
        assert live_after_crash == live_before
    assert all(pack_path(store.packs_dir, k).exists() for k in live_after_crash)

    result = store.gc_repo(SAMPLE_PROJECT)
    assert result["packs_after"] == 1
    assert store.verify()["ok"]
    swept = store.sweep(datetime.now(UTC) + timedelta(seconds=store.grace_sec + 1))
    assert swept["temp_deleted"] == (1 if point == "mid_write" else 0)
    assert [p.name for p in store.packs_dir.glob(".*")] == []
    assert [p.name for p in store.packs_dir.glob("*.mpack")] == [
        pack_path(store.packs_dir, result["consolidated_key"]).name
    ]
    shutil.rmtree(samples_root)
    store.restore(SAMPLE_PROJECT, tmp_path / "out")
    assert session_files(tmp_path / "out") == originals
    assert len(store.versions(SAMPLE_PROJECT)) == 4 + 2 + 1
