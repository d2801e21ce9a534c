"""Fewer garbage collections through a run (resources/ingest/fewer_collections.py): what is alive is frozen,
young collections wait for more objects, a paused block is not collected, and all is put back after."""

import pytest

from resources.ingest.runner import run_processors
from tests.runner_support import LineCounter

pytestmark = pytest.mark.unit


def test_a_run_holds_the_collector_back_and_puts_it_back_after(samples_root, state):
    """During a run, what was alive at its start is frozen and young collections wait for more objects;
    after it (also when it raised) the collector is as before."""
    import gc

    from resources.ingest.fewer_collections import YOUNG_THRESHOLD

    class Watching(LineCounter):
        def process_session(self, *args, **kwargs):
            seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
            return super().process_session(*args, **kwargs)

    class Broken(LineCounter):
        def commit(self, conn):
            raise OSError(28, "No space left on device")

    before = gc.get_threshold()
    seen: list[tuple[int, bool]] = []
    run_processors([Watching("watching")], samples_root, state)
    assert seen and set(seen) == {(max(before[0], YOUNG_THRESHOLD), True)}
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)
    with pytest.raises(OSError):
        run_processors([Broken("broken")], samples_root, state)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


def test_a_run_inside_a_caller_that_holds_the_collector_back_freezes_what_came_alive_since():
    """The command line holds the collector back before it imports Dagster; the run inside freezes Dagster's
    objects too, and the outermost exit unfreezes everything."""
    import gc

    from resources.ingest.fewer_collections import fewer_collections

    with fewer_collections():
        outer = gc.get_freeze_count()
        alive = [[n] for n in range(1000)]
        with fewer_collections():
            assert gc.get_freeze_count() >= outer + len(alive)
    assert gc.get_freeze_count() == 0


def test_a_paused_block_is_not_collected_and_what_it_allocated_is_frozen_after():
    """The command line imports Dagster and opens its instance with the collector paused: no young collection
    walks their objects then, and they are frozen after, so none walks them later (0.21 -> 0.03 s of CPU in
    collections over a first ingest); outside `fewer_collections` nothing is frozen."""
    import gc

    from resources.ingest.fewer_collections import collections_paused, fewer_collections

    collected = []

    def count(phase, info):
        if phase == "stop":
            collected.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with fewer_collections():
            outer = gc.get_freeze_count()
            with collections_paused():
                alive = [[n] for n in range(100_000)]  # twice the young threshold: collected twice otherwise
                assert not gc.isenabled()
            assert collected == [] and gc.isenabled()
            assert gc.get_freeze_count() >= outer + len(alive)
        assert gc.get_freeze_count() == 0
        with collections_paused():
            more = [[n] for n in range(1000)]
        assert gc.get_freeze_count() == 0 and gc.isenabled() and len(more) == 1000
    finally:
        gc.callbacks.remove(count)
