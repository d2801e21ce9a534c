"""Child process for tests/test_team.py: ``sessionlake push`` that stops dead after N pack uploads.

Usage: ``python tests/push_child.py N``, with the push's environment. After the N-th pack upload it
prints ``AT N``, flushes and sleeps until the parent SIGKILLs it (no hook lives in production code).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli.main import main  # noqa: E402
from resources.objectstore.blobs import Blobs  # noqa: E402


def stop_after(n: int) -> None:
    original = Blobs.put_fileobj_if_absent
    done = [0]

    def wrapped(self, name, body):
        result = original(self, name, body)
        done[0] += 1
        if done[0] == n:
            print(f"AT {n}", flush=True)
            time.sleep(600)
        return result

    Blobs.put_fileobj_if_absent = wrapped


if __name__ == "__main__":
    stop_after(int(sys.argv[1]))
    sys.exit(main(["push"]))
