"""Thin Dagster resources over the plain storage classes.

They live together here, not beside each class, because the storage modules must stay importable
without Dagster: ``sessionlake capture`` runs on the hot path of every prompt and cannot pay for
importing it. Each resource resolves `Settings` from the environment, overridden by its own fields
(set them in ``definitions.py`` or in run config), makes the data home private when it is set up, and
builds the plain object on demand.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from resources.config.private_home import make_private
from resources.config.settings import Settings

SENSOR_LOCK_WAIT_SEC = 15.0
"""A sensor or schedule tick waits at most this long for a warehouse another process holds (a run), then skips:
the next tick retries."""


class SessionlakeResource(dg.ConfigurableResource):
    """Base: where the data home and the sessions tree are. Empty means "from the environment"."""

    home: str = ""
    sessions_dir: str = ""
    codex_home: str = ""
    gemini_dir: str = ""
    opencode_dir: str = ""
    qwen_dir: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Make the data home private before a run, sensor or schedule writes anything in it."""
        make_private(self.settings())

    def settings(self, *, tick: bool = False) -> Settings:
        """The environment's settings with this resource's paths. ``tick``: for a sensor or schedule tick, a
        warehouse another process holds is waited for at most `SENSOR_LOCK_WAIT_SEC` (or
        SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC when shorter), so the tick can skip."""
        settings = Settings.from_env()
        for name in ("home", "sessions_dir", "codex_home", "gemini_dir", "opencode_dir", "qwen_dir"):
            if getattr(self, name):
                settings = settings._replace(**{name: Path(getattr(self, name)).expanduser().resolve()})
        if tick:
            settings = settings._replace(
                warehouse_lock_wait_sec=min(settings.warehouse_lock_wait_sec, SENSOR_LOCK_WAIT_SEC))
        return settings


class StateResource(SessionlakeResource):
    """The DuckDB warehouse (`resources.state.store.StateStore`)."""

    def store(self, *, tick: bool = False):
        """The store, for a run or (``tick``) a sensor or schedule tick (see `settings`)."""
        from resources.state.store import StateStore

        return StateStore.from_settings(self.settings(tick=tick))


class LanceResource(SessionlakeResource):
    """The Lance memory tables (`resources.memory.lance.LanceStore`)."""

    def store(self, *, tick: bool = False):
        """The store, for a run or (``tick``) a sensor or schedule tick (see `settings`)."""
        from resources.memory.lance import LanceStore

        return LanceStore.from_settings(self.settings(tick=tick))


class PackResource(SessionlakeResource):
    """The content-addressed archive (`resources.archive.packs.PackStore`)."""

    def store(self, *, tick: bool = False):
        """The store, for a run or (``tick``) a sensor or schedule tick (see `settings`)."""
        from resources.archive.packs import PackStore

        return PackStore.from_settings(self.settings(tick=tick))


class CaptureQueueResource(SessionlakeResource):
    """The capture inbox (`resources.capture.queue.CaptureQueue`)."""

    def queue(self):
        from resources.capture.queue import CaptureQueue

        return CaptureQueue.from_settings(self.settings())


class TeamResource(SessionlakeResource):
    """The team bucket (SESSIONLAKE_TEAM_URI): the manifests machines push, and where their packs are."""

    def central_location(self):
        """The team `StorageLocation` when this is the team's central deployment (SESSIONLAKE_TEAM_URI set
        and SESSIONLAKE_STORAGE_URI equal to it), else None: a machine that only pushes ingests nothing."""
        settings = self.settings()
        return settings.team if settings.team_uri and settings.storage_uri == settings.team_uri else None


NO_PREFETCH = dg.ResourceDefinition.none_resource(
    description="Reads of the run's new files started before the run (`resources.ingest.prefetch`): only "
                "`sessionlake ingest` starts them, for the run it makes in its own process; any other run (the "
                "sensor's, a backfill, the UI's) reads its files itself.")
"""The ``prefetch`` resource of the session ingest step: none, unless the command that makes the run gives it one."""
