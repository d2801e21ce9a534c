"""A processor run in a thread beside the others, for a processor whose work mostly leaves the GIL; and one
call started in a thread of its own (`InThread`): a processor's ``begin_run`` while the run plans, memory's
index build while it commits.

The archive's work is reading files, SHA-256, zstd, writing and fsyncing packs and DuckDB statements,
all of which release the GIL; the usage and memory processors parse JSON, which holds it. Run beside
them, the archive takes the second core instead of adding its time after theirs.

`Beside` starts the work at once. Its log calls are held and replayed on the caller's thread when it
is joined (a Dagster run's log is written from the step's thread), and whatever it raised is raised
there. When several run beside, each puts its name on a shared ``finished`` queue as it ends, so the
caller can join them in the order they finish. `cancel` asks it to stop before its next chunk of files
and waits: what it did not commit stays unmarked and is read again by the next run, as after a kill.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable


class HeldLog:
    """Stands in for a logger in the thread: keeps each call (with the exception being handled, when
    ``exc_info=True``) until `replay`."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, str, tuple, object]] = []

    def _hold(self, level: str, msg: str, *args, exc_info=None, **_) -> None:
        self._calls.append((level, msg, args, sys.exc_info() if exc_info is True else exc_info))

    def warning(self, msg: str, *args, **kwargs) -> None:
        self._hold("warning", msg, *args, **kwargs)

    def error(self, msg: str, *args, **kwargs) -> None:
        self._hold("error", msg, *args, **kwargs)

    def info(self, msg: str, *args, **kwargs) -> None:
        self._hold("info", msg, *args, **kwargs)

    def replay(self, logger: logging.Logger) -> None:
        calls, self._calls = self._calls, []
        for level, msg, args, exc_info in calls:
            getattr(logger, level)(msg, *args, exc_info=exc_info)


class Beside:
    """``work(log, stop)`` running in its own thread (see the module docstring)."""

    def __init__(self, work: Callable[[HeldLog, threading.Event], None], name: str,
                 finished: queue.SimpleQueue | None = None):
        self.log = HeldLog()
        self.stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work, name, finished), name=f"sessionlake-{name}")
        self._thread.start()

    def _run(self, work: Callable[[HeldLog, threading.Event], None], name: str,
             finished: queue.SimpleQueue | None) -> None:
        try:
            work(self.log, self.stop)
        except BaseException as exc:  # raised again on the caller's thread by `join`
            self._error = exc
        finally:
            if finished is not None:
                finished.put(name)

    def join(self, logger: logging.Logger) -> None:
        """Wait for the work, replay its log on ``logger``, and raise what it raised."""
        self._thread.join()
        self.log.replay(logger)
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Ask the work to stop before its next chunk of files, and wait for it."""
        self.stop.set()
        self._thread.join()


class InThread:
    """``call()`` in a thread of its own, started at once; `wait` joins it and raises what it raised, `join`
    only joins. The runner begins a processor's run this way while it plans (``_begin_early``)."""

    def __init__(self, call: Callable[[], object], name: str):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name=name)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # raised again by `wait`, where the caller takes the result
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
