"""Fewer garbage collections while a run builds rows: `fewer_collections`.

A run allocates millions of small containers (parsed lines, rows, the records a worker process
sends back) and frees few of them until a commit, so Python's cyclic collector keeps running and
each of its full passes walks every object the process holds, the imported modules' among them (a
first ingest of 2,000 sessions spent about 0.6 s of CPU in it). Inside `fewer_collections` the objects
alive at its start are frozen (`gc.freeze`: no pass walks them, and a forked worker does not copy
their pages by touching them) and a young collection waits for `YOUNG_THRESHOLD` new containers.
Collection still runs, so garbage in cycles is still freed. `collections_paused` holds it back entirely for a
block that allocates many objects that stay alive, such as importing Dagster and opening its instance, and
freezes them after.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 50_000
"""New containers before a young collection (Python's default is 700)."""

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] = ()
_froze = False


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Freeze what is alive and raise the young threshold until the outermost exit, which puts both back
    (objects someone else froze before stay frozen: nothing is frozen or unfrozen then). An inner entry
    freezes what came alive since (the run inside a command that imported Dagster meanwhile)."""
    global _depth, _saved, _froze
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), *_saved[1:])
        elif _froze:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No cyclic collection while the block runs, for a block whose objects nearly all stay alive (imports:
    Dagster's and its instance's allocate about a million objects, and the young collections that walk them,
    10-20 ms each, free next to nothing). Inside `fewer_collections` (which froze what was alive), what the
    block allocated is frozen when it ends, so no later collection walks it either; elsewhere the next
    collection does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        with _lock:
            if _depth and _froze:
                gc.freeze()
        if enabled:
            gc.enable()
