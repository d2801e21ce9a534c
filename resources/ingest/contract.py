"""What a session processor is: a name, a per-file step, and a commit of what it batched.

The runner (``runner.py``) decides which files a processor sees and from which byte offset; a
processor only turns lines into rows. Rows for one file are built locally and handed to the batch
only when the file succeeded, so a file that raises contributes nothing. ``commit`` writes the batch
(one DuckDB transaction, one Lance commit per table, one pack per project); files are marked
processed only after the commit that holds their rows succeeded; after a failed commit the runner
calls ``discard`` and processes the files again in halves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from resources.ingest.session_files import MalformedLine
from resources.state.store import Connection


@dataclass
class ProcessorResult:
    """What processing one file produced.

    ``end_offset`` is the first byte not consumed (None: the whole file); the next run resumes there
    if the file only grew. ``malformed`` lists skipped lines so the runner can keep them.
    """

    items_count: int = 0
    end_offset: int | None = None
    bytes_read: int = 0
    malformed: list[MalformedLine] = field(default_factory=list)


class SessionProcessor:
    """Base class: override ``name``, ``process_session`` and, when rows are batched, ``commit``.

    ``commit_every_files`` bounds how many files are processed between commits; None means one
    commit per run (what Lance tables and packs want: one version, one pack).
    """

    name: str = ""
    commit_every_files: int | None = None
    origin: dict[str, str] = {}  # shared default: only ever replaced, never mutated
    """Who the next files come from (``user_name``, ``machine``): set per pack by a team ingest, empty for
    this machine's own sessions. A processor that writes rows may attribute them with it."""

    files_in_run: int = 0
    """How many files the run gives this processor: set by the runner before it takes the first (0: not known,
    as in a team ingest). A processor may size what it does beside its commits by it."""

    def begin_run(self) -> None:
        """Called once before the first file of a run."""

    def process_session(
        self,
        session_path: Path,
        project: str,
        session_key: str,
        conn: Connection,
        *,
        start_offset: int = 0,
    ) -> ProcessorResult:
        """Turn the file's lines from ``start_offset`` into batched rows; for a processor with
        ``parallel_reads``, `read_session` then `take`."""
        if not self.parallel_reads:
            raise NotImplementedError
        read, result = self.read_session(session_path, project, session_key, start_offset)
        self.take(read)
        return result

    runs_beside: bool = False
    """True when the processor's work mostly leaves the GIL (file reads, hashing, compression, writes), so
    the runner may run it in a thread beside the processors that parse (`resources.ingest.beside`). It
    shares no state with them; its rows go to tables of its own."""

    parallel_reads: bool = False
    """True when `process_session` is `read_session` (reads the file and nothing else, so it may run in a
    worker process) followed by `take` (adds what was read to the batch): the runner may then read many
    files at once, one worker per core."""

    @staticmethod
    def read_session(session_path: Path, project: str, session_key: str, start_offset: int = 0,
                     ) -> tuple[object, ProcessorResult]:
        """What `take` needs of one file (picklable), and the result; only for ``parallel_reads``."""
        raise NotImplementedError

    @staticmethod
    def for_sending(reads: list) -> list:
        """In a worker process: the `read_session` values of a batch of files it read, as they are sent to the
        run (pickled) for `take`; as they are, unless the processor has a form cheaper to send and to take."""
        return reads

    def take(self, read: object) -> None:
        """Add what `read_session` returned for one file to the batch; only for ``parallel_reads``."""
        raise NotImplementedError

    def while_reading(self) -> None:
        """Called once the worker processes of a ``parallel_reads`` run have started reading: work the
        commits will need, done while this process would otherwise wait for the first files."""

    def commit(self, conn: Connection) -> None:
        """Write everything batched since the last commit. Called with a fresh short-lived connection."""

    def discard(self) -> None:
        """Drop everything batched since the last commit, which failed. The runner then processes those
        files again in smaller batches to find the one the commit could not take."""

    def end_run(self) -> dict:
        """Called once after the last commit; returns extra stats for the run's metadata."""
        return {}
