"""Child process for tests/test_kill_anywhere.py: drain the capture inbox into Lance, as the
``capture_records`` asset does (``resources.capture.drain.drain_to_lance``), from the settings in
the environment. Usage: ``python tests/capture_drain_child.py BATCH_SIZE``; prints the stats.
Small batches make many Lance commits, so a SIGKILL can land between any two of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.capture.drain import drain_to_lance  # noqa: E402
from resources.capture.queue import CaptureQueue  # noqa: E402
from resources.config.settings import Settings  # noqa: E402
from resources.memory.lance import LanceStore  # noqa: E402


def main() -> None:
    settings = Settings.from_env()
    stats = drain_to_lance(CaptureQueue.from_settings(settings), LanceStore.from_settings(settings),
                           batch_size=int(sys.argv[1]))
    print(f"drained {stats.records} record(s) in {stats.batches} batch(es)", flush=True)


if __name__ == "__main__":
    main()
