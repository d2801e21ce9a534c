"""Walking an agent's folder: regular files with given suffixes, sorted, symlinks never followed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path


def walk_files(base: Path | str, suffixes: tuple[str, ...]) -> Iterator[tuple[str, os.stat_result]]:
    """``(path, stat)`` of every regular file under ``base`` whose name ends with one of ``suffixes``.

    A missing ``base`` yields nothing; a folder that vanishes or cannot be listed mid-walk is skipped.
    """
    try:
        entries = sorted(os.scandir(base), key=attrgetter("name"))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk_files(entry.path, suffixes)
        elif entry.name.endswith(suffixes):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield entry.path, st
