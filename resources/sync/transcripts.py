"""``sessionlake sync --with-transcripts``: the session archive's packs to the sync location, through
``sessionlake push``'s path (`resources.team.push`: put-if-absent packs, then a journaled manifest).

Packs hold whole transcripts (prompts, responses, tool output, paths): this is the one way anything
but usage rows leaves the machine, and only when asked. They land beside the usage files, under
``packs/`` and ``manifests/``, in the team bucket's layout, so a central deployment can ingest them.
"""

from __future__ import annotations

from collections.abc import Callable

from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.runner import run_processors
from resources.sources import found_sources, walk_all
from resources.team.push import push


def push_transcripts(settings: Settings, location, user: str, machine: str,
                     log: Callable[[str], None] = lambda _m: None) -> dict:
    """Archive new session versions, then push every pack the location lacks; returns `push`'s report
    plus ``archive_errors`` (files the archive could not read: retried next time)."""
    store = PackStore.from_settings(settings)
    files = list(walk_all(found_sources(settings)))
    stats = run_processors([ArchiveProcessor(store)], settings.sessions_dir, store.state, files=files)["archive"]
    journal = settings.home / "sync-transcripts"  # apart from a team push's journal, which names another bucket
    return {**push(store, location, user, machine, journal, log), "archive_errors": stats["error_files"]}
