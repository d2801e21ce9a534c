"""What the runner reads: a session file on disk, or an archived session version made a file while it is read."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from resources.archive.pack_format import Snapshot


class FileToRead(Protocol):
    """A file the runner reads: a session file on disk (`SessionFile`), or a session version in an
    archived pack, written to a scratch file only while a processor reads it (resources/team/ingest.py)."""

    key: str
    project: str

    @property
    def size(self) -> int: ...

    def opened(self, start_offset: int = 0) -> contextlib.AbstractContextManager[Path]:
        """The path to read from ``start_offset`` on, valid inside the ``with``."""

    def tail(self, end_offset: int) -> str | None:
        """What to keep to recognise a later append (`ProcessorFileState.tail_hash`), or None."""


@dataclass
class ArchivedFile:
    """A session version from the archive as a `FileToRead`: ``write(snap, start_offset)`` puts its bytes
    in a scratch file (or a restored tree) for as long as a processor reads it (a pushed pack in the
    team ingest, every archived version in ``memory rebuild``)."""

    snap: Snapshot
    project: str
    write: Callable[[Snapshot, int], contextlib.AbstractContextManager[Path]]

    @property
    def key(self) -> str:
        return self.snap.session_key

    @property
    def size(self) -> int:
        return self.snap.size

    def opened(self, start_offset: int = 0) -> contextlib.AbstractContextManager[Path]:
        return self.write(self.snap, start_offset)

    def tail(self, end_offset: int) -> None:
        """None: a grown archived version is told by its chunks, not by the bytes before the offset."""
        return None
