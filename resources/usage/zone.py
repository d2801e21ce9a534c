"""The time zone reports group days in: the one named, or the system's, as ccusage does.

``resolve_zone(None)`` and ``resolve_zone("local")`` give the system zone's IANA name: ``TZ`` when it
names a zone (``Asia/Kolkata``, ``:Asia/Kolkata`` or a path under a ``zoneinfo`` folder), else the zone
``/etc/localtime`` links to, else ``/etc/timezone``'s, else ``UTC``. A name is checked against the zone
database, so a typo fails at once (`ValueError`) rather than on the first row converted.
"""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCAL = "local"
"""``-z local``: the system zone, as ccusage accepts it."""


def resolve_zone(name: str | None) -> str:
    """The IANA name of zone ``name`` (None or ``local``: the system's); `ValueError` for an unknown one."""
    if name is None or name == LOCAL:
        return system_zone()
    if not _known(name):
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as UTC or America/New_York, "
                         "or 'local' for the system's")
    return name


def system_zone() -> str:
    """The system zone's IANA name (see the module doc); ``UTC`` when none can be found."""
    for candidate in (_from_tz(os.environ.get("TZ")), _from_path(_readlink("/etc/localtime")), _etc_timezone()):
        if candidate and _known(candidate):
            return candidate
    return "UTC"


def _from_tz(value: str | None) -> str | None:
    if not value:
        return None
    value = value.removeprefix(":")
    return _from_path(value) if value.startswith("/") else value


def _from_path(path: str | None) -> str | None:
    """``Europe/Paris`` from ``/usr/share/zoneinfo/Europe/Paris``."""
    if not path or "zoneinfo/" not in path:
        return None
    return path.rsplit("zoneinfo/", 1)[1].removeprefix("posix/").removeprefix("right/")


def _readlink(path: str) -> str | None:
    try:
        return os.path.realpath(path) if os.path.islink(path) else None
    except OSError:
        return None


def _etc_timezone() -> str | None:
    try:
        return Path("/etc/timezone").read_text().strip() or None
    except OSError:
        return None


def _known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
