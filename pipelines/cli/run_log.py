"""What a run started by `sessionlake ingest` prints on the terminal: a few lines, whatever the run's size.

Dagster's console logger prints each warning with its traceback and a failed step's whole error chain
(about 90 lines for a full disk; one traceback per file when many files fail). The run's full log is on
the instance anyway (the Dagster UI shows it by run id), and the command reports the outcome itself
(the failed files' table, or one line for a failed run). So `TerminalLog` gives the run a logger that
prints the first line of each warning or error the run's code logs, at most `MAX_LINES` of them, and none
of Dagster's own events (a step or run failure is the command's to report). What else would reach the
terminal while the run executes (a library's warnings, such as a Postgres client retrying a lost
server six times, libpq's notice that the server shuts down, Dagster's own complaints written to
stderr) goes to a file instead (`held_back`).
``--debug`` keeps Dagster's console logger and the terminal as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 5
"""Warnings printed per run; `TerminalLog.more` counts the rest."""

_META = "dagster_meta"  # where Dagster puts a record's run, step and event (dagster._core.log_manager)


class TerminalLog(logging.Handler):
    """The handler behind `logger_defs`; ``printed`` and ``more`` count what it printed and held back."""

    def __init__(self, stream=None, max_lines: int = MAX_LINES):
        super().__init__(logging.WARNING)
        self.stream = stream
        self.max_lines = max_lines
        self.printed = 0
        self.more = 0

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, _META, None) or {}
        if meta.get("dagster_event") is not None:  # STEP_FAILURE, RUN_FAILURE, ...: the command says the outcome
            return
        if self.printed >= self.max_lines:
            self.more += 1
            return
        text = str(meta.get("orig_message") or record.getMessage()).strip()
        first = (text.splitlines() or [""])[0][:300]
        print(f"{record.levelname.lower()}: {first}", file=self.stream or sys.stderr)
        self.printed += 1

    def logger_defs(self) -> dict:
        """``{"console": ...}``: replaces Dagster's console logger for one ``execute_in_process``."""
        import dagster as dg

        handler = self

        @dg.logger(description="a few lines on the terminal; the full log is on the instance")
        def terminal(_init_context) -> logging.Logger:
            log = logging.Logger("sessionlake.run", logging.WARNING)
            log.addHandler(handler)
            return log

        return {"console": terminal}

    def summary(self, run_id: str) -> str | None:
        """The line that says how many warnings were held back and where they are, or None."""
        if not self.more:
            return None
        return (f"... and {self.more} more warning(s): the run's full log is run {run_id} in the Dagster UI "
                "(`sessionlake dev`), or run the command again with --debug")


@contextlib.contextmanager
def held_back(path: Path) -> Iterator[TerminalLog]:
    """While the block runs, a `TerminalLog` that prints on the terminal's stderr, and everything else
    written to file descriptor 2 held back: Python's stderr and root logger, and what C libraries print
    there (libpq's notices of a server shutting down), the run's worker processes too. Written to ``path``
    when there was any (the last run's only; nothing when the disk is full)."""
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = TerminalLog(stream=os.fdopen(os.dup(saved), "w", buffering=1))
    root = logging.getLogger()
    with tempfile.TemporaryFile() as held, open(held.fileno(), "w", buffering=1, closefd=False) as held_text:
        catch = logging.StreamHandler(held_text)  # a root logger with a handler: `logging.warning` adds none
        catch.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        os.dup2(held.fileno(), 2)
        root.addHandler(catch)
        try:
            with contextlib.redirect_stderr(held_text):
                yield terminal
        finally:
            root.removeHandler(catch)
            held_text.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.stream.close()
            held.seek(0)
            text = held.read()
            if text:
                with contextlib.suppress(OSError):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(text)
