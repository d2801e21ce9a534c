"""The data home is private: session transcripts hold secrets, so nobody but the owner reads it.

`make_private(settings)` sets the process umask to 0o077, so every file and folder created afterwards
by this process, by the libraries it calls (DuckDB, Lance, Dagster's SQLite storage) and by the
processes it starts (``sessionlake dev`` starts the Dagster daemon, webserver and run workers) is
0600 or 0700, whatever umask the shell had. Then it creates the home 0700. A home that an older
sessionlake left open (the home itself not 0700) is tightened once: the home and everything
sessionlake keeps in it lose their group and other bits; nothing else in the folder is touched.

Reading the settings changes nothing; each entry point calls it, explicitly, before it writes
anything: the CLI (`pipelines.cli.main`, so ``sessionlake dev`` and the Dagster processes it starts
inherit the umask), every Dagster resource when a run, sensor or schedule sets it up, and a script
using the Python API (``make_private(Settings.from_env())``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resources.config.settings import Settings

PRIVATE_UMASK = 0o077
HOME_MODE = 0o700


def make_private(settings: Settings) -> None:
    """Set the umask to 0o077, create the home 0700, and tighten a home an older version left open."""
    os.umask(PRIVATE_UMASK)
    home = settings.home
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(home.stat().st_mode) == HOME_MODE:
        return
    for path in owned_paths(settings):
        _tighten_tree(path)
    home.chmod(HOME_MODE)  # last: a crash half way leaves the home open, so the next start redoes it


def owned_paths(settings: Settings) -> list[Path]:
    """What sessionlake keeps in the home: the warehouse (and its WAL), every folder it creates."""
    return [settings.state_path, settings.state_path.with_name(settings.state_path.name + ".wal"),
            settings.lance_dir, settings.packs_dir, settings.capture_dir, settings.provenance_overflow_dir,
            settings.retry_dir, settings.dagster_home]


def _tighten_tree(root: Path) -> None:
    """Drop group and other bits from ``root`` and, for a folder, everything below it; symlinks are
    neither followed nor changed."""
    if not root.exists() or root.is_symlink():
        return
    _tighten(root)
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                _tighten(Path(folder, name))


def _tighten(path: Path) -> None:
    st = path.lstat()
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
