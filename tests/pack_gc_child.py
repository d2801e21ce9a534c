"""Child process for tests/test_pack_gc_crash.py: run pack GC and stop dead at a named point.

Usage: ``python tests/pack_gc_child.py HOME PROJECT POINT``. At POINT the child prints ``AT POINT``,
flushes, and sleeps until the parent test SIGKILLs it. Points wrap the real GC steps from outside
(no hook lives in production code): ``mid_write`` (first object of the consolidated pack written),
``after_pack_write`` (pack durable, index untouched), ``in_txn`` (every statement of the swap ran,
COMMIT not yet), ``after_commit`` (swap committed). ``none`` runs GC to the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.archive import gc as pack_gc  # noqa: E402
from resources.archive import pack_format  # noqa: E402
from resources.archive.packs import PackStore  # noqa: E402
from resources.state.store import StateStore  # noqa: E402


def stop(point: str) -> None:
    print(f"AT {point}", flush=True)
    time.sleep(600)


def after(func, point: str):
    def wrapped(*args, **kwargs):
        result = func(*args, **kwargs)
        stop(point)
        return result

    return wrapped


def main() -> None:
    home, project, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if point == "mid_write":
        pack_format.PackWriter.add_object = after(pack_format.PackWriter.add_object, point)
    elif point == "after_pack_write":
        PackStore.write_pack = after(PackStore.write_pack, point)
    elif point == "in_txn":
        pack_gc._repoint = after(pack_gc._repoint, point)
    elif point == "after_commit":
        pack_gc._swap = after(pack_gc._swap, point)
    store = PackStore(home / "packs", StateStore(home / "state.duckdb"))
    print(store.gc_repo(project), flush=True)


if __name__ == "__main__":
    main()
