"""Failures of the environment (a full disk, a warehouse another process holds, a lost Postgres
server, an unreachable bucket) as the one line a command prints instead of a traceback.

`environment_failure(exc)` looks through ``exc`` and its causes and returns that line, naming the
path and its file system or the server, or None when the error is not the environment's (a bug, whose
traceback a person needs). ``--debug`` or ``SESSIONLAKE_DEBUG=1`` shows the traceback anyway.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator

_FULL = (errno.ENOSPC, errno.EDQUOT)
_PATH = re.compile(r"""["']?(/[^"'\s:]+)""")


class EnvironmentFailure(RuntimeError):
    """An environmental failure already put in one line (say, the one a failed run recorded)."""


def environment_failure(exc: BaseException) -> str | None:
    """The one line for an environmental failure somewhere in ``exc``'s chain, else None."""
    for error in _chain(exc):
        if isinstance(error, EnvironmentFailure):
            return str(error)
        line = _classify(str(error), type(error), getattr(error, "errno", None), getattr(error, "filename", None))
        if line:
            return line
    return None


def environment_failure_in(error_info) -> str | None:
    """The same, for an error a Dagster run recorded (a ``SerializableErrorInfo`` and its causes)."""
    seen = 0
    while error_info is not None and seen < 20:
        line = _classify(error_info.message, None, None, None, error_info.cls_name)
        if line:
            return line
        error_info = error_info.cause or error_info.context
        seen += 1
    return None


def _classify(text: str, kind: type | None, err_no, filename, name: str | None = None) -> str | None:
    name = kind.__name__ if kind is not None else (name or "")
    module = kind.__module__ if kind is not None else ""
    if err_no in _FULL or "No space left on device" in text or "database or disk is full" in text:
        where = _where(filename or _path_in(text))
        return f"No space left on device{where}; free space there, then run the command again"
    if err_no == errno.EROFS or "Read-only file system" in text:
        return f"read-only file system{_where(filename or _path_in(text))}; the data home must be writable"
    if "Could not set lock" in text or "Conflicting lock" in text:
        holder = re.search(r"\(PID (\d+)\)", text)
        path = _path_in(text)
        who = f"process {holder.group(1)}" if holder else "another process"
        return (f"the warehouse{' ' + path if path else ''} is held by {who} (DuckDB allows one writer at "
                "a time); let it finish, then run the command again")
    if "too many retries for DB connection" in text or (
            name == "OperationalError" and module.startswith(("psycopg", "sqlalchemy"))):
        return (f"lost the Dagster instance's Postgres server ({_first_line(text)}); start it, then run the "
                "command again: runs it left STARTED are marked failed at the next start")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError") or (
            "object store" in text.lower() and ("connect" in text.lower() or "refused" in text.lower())):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the storage bucket's endpoint"
        return (f"cannot reach the storage bucket at {endpoint} ({_first_line(text)}); check "
                "AWS_ENDPOINT_URL and the network, then run the command again")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        stack.extend((error.__context__, error.__cause__))


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _path_in(text: str) -> str | None:
    match = _PATH.search(text)
    return match.group(1) if match else None


def _where(path) -> str:
    """``": PATH (file system at MOUNT, N bytes free)"``, as much of it as can be known."""
    if not path:
        return ""
    mount = os.path.abspath(str(path))
    while not os.path.ismount(mount) and mount != os.path.dirname(mount):
        mount = os.path.dirname(mount)
    try:
        stat = os.statvfs(mount)
        free = f", {stat.f_bavail * stat.f_frsize:,} bytes free"
    except OSError:
        free = ""
    return f": {path} (file system at {mount}{free})"
