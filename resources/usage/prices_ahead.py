"""genai-prices' database loaded in a forked process while a first report starts: `PricesAhead`.

A first report on a new home prices every model it meets, so it needs the price database, and loading it
costs about 0.17 s of CPU (genai-prices builds some 600 model entries with pydantic, and its package imports
an HTTP client for its price updates). Loaded in the report's process, that ran beside the worker processes
that read the files, a third consumer of two cores. The report's own start (its imports, the warehouse's
schema, walking the folders) runs on one core, so a process forked at the start loads the database on the
other, computes every name's price (`resources.usage.pricing.database_prices`) and sends them back pickled
(about 90 KB: plain dataclasses); the report's process takes them when it first needs a price and never
imports genai-prices. The database stays the one source of the prices; only the process that reads it moves.

Forked on Linux only (elsewhere `start` returns None and the report loads the database itself). When the
forked process fails, the report loads the database itself too.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import pickle
import signal
import sys
import types

from resources.usage.pricing import DatabasePrice, database_prices


class PricesAhead:
    """A forked process computing `database_prices`; `prices` waits for them (a `pricing.DatabaseSource`)."""

    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd
        self.taken: dict[str, DatabasePrice] | None = None
        self.done = False

    @classmethod
    def start(cls) -> PricesAhead | None:
        if sys.platform != "linux":
            return None
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _send_prices(write_end)
        os.close(write_end)
        return cls(pid, read_end)

    def prices(self) -> dict[str, DatabasePrice] | None:
        """The prices the forked process computed (once; later calls return the same), None if it failed."""
        if not self.done:
            self.done = True
            try:
                with os.fdopen(self.fd, "rb") as pipe:
                    data = pipe.read()
                _, status = os.waitpid(self.pid, 0)
                if os.waitstatus_to_exitcode(status) == 0:
                    self.taken = pickle.loads(data)
            except (OSError, pickle.UnpicklingError, EOFError):
                self.taken = None
        return self.taken

    def close(self) -> None:
        """End the forked process if its prices were never taken (a report that priced nothing new)."""
        if not self.done:
            self.done = True
            with contextlib.suppress(OSError):
                os.close(self.fd)
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)


def _send_prices(fd: int) -> None:
    """In the forked process: write the pickled `database_prices` to ``fd`` and exit (1 on any failure), without
    running the parent's exit handlers or flushing its buffers. The collector is off: a process of a fraction of
    a second that builds thousands of objects and frees none."""
    code = 1
    try:
        gc.disable()
        data = pickled_prices()
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)


def pickled_prices() -> bytes:
    """`database_prices`, pickled, computed in this process without running genai-prices' package ``__init__``
    (`_skip_package_init`): for a process forked to compute them (here, or the read-ahead worker of an ingest,
    `resources.ingest.prefetch`), never for one that goes on to use genai-prices itself."""
    _skip_package_init()
    return pickle.dumps(database_prices(), protocol=pickle.HIGHEST_PROTOCOL)


def _skip_package_init() -> None:
    """In the forked process: genai-prices' modules are imported under a bare package module, so its package
    ``__init__`` does not run: that imports the client of its price updates (httpx2 and asyncio, about 40 ms of
    this process's 150), which an offline read of the bundled database never uses. Its data and type modules
    import only each other. Should that change, this process fails and the report loads the database itself."""
    spec = importlib.util.find_spec("genai_prices")
    if spec is not None and spec.submodule_search_locations and "genai_prices" not in sys.modules:
        package = types.ModuleType("genai_prices")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["genai_prices"] = package
