"""A tiny cache of computed status lines, so a refresh with nothing new costs no warehouse read.

One JSON file per key under the folder (``$SESSIONLAKE_HOME/statusline/``): the line, the
fingerprint it was computed for (the transcript's size and mtime) and when. `get` returns the line
only for the same fingerprint and while it is younger than ``max_age`` seconds, which bounds how stale
the other figures (today's cost, the block) can be. Only the standard library is imported here: this
is the fast path of a command that runs on every prompt. Files are 0600 in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path


class LineCache:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def get(self, key: str, fingerprint: list, max_age: float) -> str | None:
        """The cached line for ``key`` if it was stored for ``fingerprint`` under ``max_age`` seconds ago."""
        try:
            entry = json.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None
        fresh = isinstance(entry, dict) and 0 <= time.time() - entry.get("at", 0) < max_age
        return entry.get("line") if fresh and entry.get("fingerprint") == fingerprint else None

    def put(self, key: str, fingerprint: list, line: str) -> None:
        """Store ``line``; written to a temp file and renamed, so a reader never sees half of it."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        path = self._path(key)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"line": line, "fingerprint": fingerprint, "at": time.time()}).encode())
        finally:
            os.close(fd)
        os.replace(temp, path)
