"""Ending a ``sessionlake`` process once its work is done, without the interpreter's teardown.

After the last statement, CPython joins threads, runs the atexit handlers, then tears down every
module and object; with Dagster, LanceDB and DuckDB loaded that teardown took 0.8 s of a 5.5 s
ingest, paid on every call. `exit_now` does the part that writes (non-daemon threads joined, atexit
handlers run: the provenance write-behind queue drains there, logging flushes), flushes stdout and
stderr, and then ends the process with ``os._exit``. Stores are closed by the commands themselves
(DuckDB connections are short-lived context managers, Lance commits before its calls return), so
nothing written is lost; ``tests/test_kill_anywhere.py`` checks it.

Only the console script and ``python -m pipelines.cli[.main]`` end this way; ``main()`` returns its
exit code, so tests and other callers in the same process are unaffected.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading


def exit_now(code: int) -> None:
    """Flush and close what writes, then end the process with ``code`` at once. Never returns."""
    try:
        threading._shutdown()  # what interpreter exit does first: join non-daemon threads, stop executors
        atexit._run_exitfuncs()  # then the atexit handlers (provenance queue drain, logging shutdown, ...)
        for stream in (sys.stdout, sys.stderr):
            # a closed pipe (| head) or a closed stream: nothing left to say
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    finally:
        os._exit(code)


def console_script(main=None) -> None:
    """The ``sessionlake`` command: ``main()`` (default `pipelines.cli.main.main`, on ``sys.argv``), then
    `exit_now` with its exit code (argparse's ``SystemExit`` too)."""
    if main is None:
        from pipelines.cli.main import main
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): print it, exit 1, as the interpreter would
        print(code, file=sys.stderr)
        code = 1
    exit_now(code)
