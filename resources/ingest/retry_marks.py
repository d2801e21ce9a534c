"""Projects whose files a processor could not read, so the session sensor asks for them again.

The session sensor reads no database and asks for a run only when a project's files change; a file
that failed (unreadable, or a processor error) would otherwise wait for the project's next change.
A run that leaves failures writes a small marker per (processor, project) under ``<home>/retry/``;
a run without failures removes it. The sensor lists that folder: attempt ``n`` becomes due
``RETRY_BASE_SEC * 2 ** (n - 1)`` after the failure, and after ``MAX_ATTEMPTS`` the project waits for
its next change (the failures stay in the run's metadata and the marker, for a person to read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

RETRY_BASE_SEC = 300.0
MAX_ATTEMPTS = 6


def _marker(retry_dir: Path, processor: str, project: str) -> Path:
    digest = hashlib.sha256(f"{processor}\0{project}".encode()).hexdigest()[:24]
    return retry_dir / f"{digest}.json"


def record_failures(retry_dir: Path, processor: str, project: str, failed_files: list[str],
                    now: float | None = None) -> None:
    """Remember ``failed_files`` of ``project`` (attempts count up), or forget the project if none failed."""
    path = _marker(retry_dir, processor, project)
    if not failed_files:
        path.unlink(missing_ok=True)
        return
    attempts = 1
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # no marker yet, or a damaged one
        attempts = json.loads(path.read_text())["attempts"] + 1
    retry_dir.mkdir(parents=True, exist_ok=True)
    body = {"processor": processor, "project": project, "attempts": attempts,
            "failed_at": time.time() if now is None else now, "files": sorted(failed_files)}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def due_retries(retry_dir: Path, now: float | None = None) -> dict[str, str]:
    """``{project: token}`` for projects whose retry is due; the token changes with every attempt."""
    now = time.time() if now is None else now
    due: dict[str, str] = {}
    try:
        entries = list(os.scandir(retry_dir))
    except FileNotFoundError:
        return due
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            mark = json.loads(Path(entry.path).read_text())
            attempts, failed_at, project = int(mark["attempts"]), float(mark["failed_at"]), str(mark["project"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a marker being replaced or damaged: the next tick reads it again
        if attempts <= MAX_ATTEMPTS and now >= failed_at + RETRY_BASE_SEC * 2 ** (attempts - 1):
            token = f"{mark.get('processor', '')}-{attempts}-{int(failed_at)}"
            due[project] = min(token, due.get(project, token))
    return due
