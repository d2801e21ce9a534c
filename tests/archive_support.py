"""Helpers shared by the archive tests: ingest a tree, grow or rewrite a session file, read bytes back."""

from __future__ import annotations

from pathlib import Path

import orjson

from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.runner import run_processors


def pack_store(settings: Settings) -> PackStore:
    return PackStore.from_settings(settings)


def ingest(store: PackStore, root: Path) -> dict:
    """One archive run over ``root``; returns the runner's stats for the archive processor."""
    return run_processors([ArchiveProcessor(store)], root, store.state)["archive"]


def grow(path: Path, n: int = 3, tag: str = "grow") -> bytes:
    """Append ``n`` JSONL lines to a session file; returns the bytes appended."""
    extra = b"".join(
        orjson.dumps({"type": "user", "uuid": f"{tag}-{i}", "message": {"role": "user", "content": f"{tag} {i}"}})
        + b"\n"
        for i in range(n)
    )
    with open(path, "ab") as f:
        f.write(extra)
    return extra


def rewrite(path: Path, keep_lines: int = 2) -> None:
    """Rewrite a session file in place: keep its first lines and add a new one (a compaction-like edit)."""
    lines = path.read_bytes().splitlines(keepends=True)[:keep_lines]
    path.write_bytes(b"".join(lines) + orjson.dumps({"type": "summary", "summary": "rewritten"}) + b"\n")


def session_files(root: Path) -> dict[str, bytes]:
    """``{session key: bytes}`` of every session file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}
