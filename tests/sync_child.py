"""Child process for tests/test_sync.py: ``sessionlake sync`` that stops dead in a compaction, after the
compacted file is written and N of the files it replaces are deleted.

Usage: ``python tests/sync_child.py N``, with the sync's environment (a folder or an ``s3://`` location).
Before the (N+1)-th delete it prints ``AT N``, flushes and sleeps until the parent SIGKILLs it (no hook
lives in production code).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli.main import main  # noqa: E402
from resources.objectstore.blobs import Blobs  # noqa: E402
from resources.objectstore.folder import FolderBlobs  # noqa: E402


def stop_before_delete(n: int) -> None:
    done = [0]
    for cls in (Blobs, FolderBlobs):
        original = cls.delete

        def wrapped(self, name, _original=original):
            if done[0] == n:
                print(f"AT {n}", flush=True)
                time.sleep(600)
            done[0] += 1
            return _original(self, name)

        cls.delete = wrapped


if __name__ == "__main__":
    stop_before_delete(int(sys.argv[1]))
    sys.exit(main(["sync"]))
