"""Push manifests: what one push of one machine named, stored as ``manifests/<time>-<digest>.json``.

A manifest is a small JSON document::

    {"format": "sessionlake-push", "version": 1, "user": ..., "machine": ..., "created_at": ISO-8601,
     "packs": [{"key": "sha256:...", "repo": PROJECT, "bytes": N}, ...]}

Its name starts with its UTC creation time (so names sort by time and a reader can list from a
cursor) and ends with a digest of its content (so a push retried after a kill writes the same name,
which put-if-absent turns into a no-op). Manifests are written after every pack they name, so a
reader never sees a manifest whose packs are not all there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

FORMAT_NAME = "sessionlake-push"
FORMAT_VERSION = 1
PREFIX = "manifests/"
PACKS_PREFIX = "packs"
_NAME = re.compile(r"^manifests/\d{8}T\d{6}\d{6}Z-[0-9a-f]{16}\.json$")
_LABEL = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")


class ManifestError(ValueError):
    """A manifest that cannot be read or names something it must not; the message says which and why."""


@dataclass(frozen=True)
class PackEntry:
    key: str
    repo: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    name: str
    user: str
    machine: str
    created_at: datetime
    packs: tuple[PackEntry, ...]

    def to_json(self) -> bytes:
        return _encode(self.user, self.machine, self.created_at, self.packs)


def check_label(kind: str, value: str) -> str:
    """A user or machine name: letters, digits and ``._@+-``, at most 128 (they end up in reports)."""
    if not _LABEL.match(value or ""):
        raise ManifestError(f"{kind} {value!r} is not a usable name (letters, digits and ._@+- only, "
                            f"at most 128); set SESSIONLAKE_{kind.upper()}")
    return value


def _encode(user: str, machine: str, created_at: datetime, packs) -> bytes:
    return json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "user": user, "machine": machine,
                       "created_at": created_at.astimezone(UTC).isoformat(),
                       "packs": [{"key": p.key, "repo": p.repo, "bytes": p.bytes} for p in packs]},
                      sort_keys=True, separators=(",", ":")).encode()


def new_manifest(user: str, machine: str, packs: list[PackEntry], now: datetime | None = None) -> Manifest:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    packs = tuple(sorted(packs, key=lambda p: p.key))
    digest = hashlib.sha256(_encode(check_label("user", user), check_label("machine", machine), now,
                                    packs)).hexdigest()[:16]
    return Manifest(f"{PREFIX}{now:%Y%m%dT%H%M%S%f}Z-{digest}.json", user, machine, now, packs)


def parse_manifest(name: str, data: bytes) -> Manifest:
    """The manifest stored as ``name``; ManifestError for anything malformed (nothing half-read is used)."""
    from resources.archive.pack_format import PackError, key_hex

    if not _NAME.match(name):
        raise ManifestError(f"{name}: not a manifest name")
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT_NAME or doc.get("version") != FORMAT_VERSION:
            raise ManifestError(f"{name}: not a {FORMAT_NAME} version {FORMAT_VERSION} document")
        packs = tuple(PackEntry(p["key"], p["repo"], int(p["bytes"])) for p in doc["packs"])
        for p in packs:
            key_hex(p.key)
            if not p.repo or "/" in p.repo or p.repo in (".", ".."):
                raise ManifestError(f"{name}: pack {p.key} names an unusable project {p.repo!r}")
        return Manifest(name, check_label("user", doc["user"]), check_label("machine", doc["machine"]),
                        datetime.fromisoformat(doc["created_at"]), packs)
    except ManifestError:
        raise
    except (ValueError, KeyError, TypeError, PackError) as exc:
        raise ManifestError(f"{name}: {type(exc).__name__}: {exc}") from None


def list_manifest_names(blobs, start_after: str | None = None) -> Iterator[str]:
    """Manifest names in the team bucket, in time order, after ``start_after``."""
    for blob in blobs.list(PREFIX, start_after=start_after):
        if blob.name.endswith(".json"):
            yield blob.name


def read_manifest(blobs, name: str) -> Manifest:
    return parse_manifest(name, blobs.get_bytes(name))
