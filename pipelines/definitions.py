"""The one Definitions object of the sessionlake code location.

Each domain under ``pipelines/defs/`` exposes its definitions (``defs``, or ``build_defs(settings)`` when
a sensor's interval is a setting); `build_defs` merges them and binds the storage resources. Importing
this module reads nothing: ``defs`` is built on first use (Dagster looks it up when it loads the code
location) from `Settings.from_env()`, so a bad ``SESSIONLAKE_*`` value fails the load with its one-line
`SettingError`. Every resource reads its paths from the environment (``SESSIONLAKE_HOME``,
``SESSIONLAKE_SESSIONS_DIR``; see resources/config/settings.py).
"""

import functools

import dagster as dg

from pipelines.defs.archive import definitions as archive
from pipelines.defs.capture import definitions as capture
from pipelines.defs.lance import definitions as lance
from pipelines.defs.resources import (
    NO_PREFETCH,
    CaptureQueueResource,
    LanceResource,
    PackResource,
    StateResource,
    TeamResource,
)
from pipelines.defs.sessions import definitions as sessions
from pipelines.defs.team import definitions as team
from resources.config.settings import SettingError, Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The code location's definitions for ``settings`` (which set the sensors' intervals and the assets'
    owners)."""
    domains = [sessions.build_defs(settings), capture.defs, archive.defs, lance.build_defs(settings), team.defs]
    return dg.Definitions.merge(
        *(_owned_by(settings.owners, domain) for domain in domains),
        dg.Definitions(
            # Every job without an executor of its own runs its steps in the run's process, above all the
            # implicit asset job that UI materializations and GraphQL/UI backfills run as: without this, a
            # backfill of the session assets ran multiprocess (one subprocess per step, seconds each).
            executor=dg.in_process_executor,
            resources={
                "state": StateResource(),
                "lance": LanceResource(),
                "packs": PackResource(),
                "capture_queue": CaptureQueueResource(),
                "team": TeamResource(),
                "prefetch": NO_PREFETCH,
            }
        ),
    )


def _owned_by(owners: tuple[str, ...], domain: dg.Definitions) -> dg.Definitions:
    """A domain's definitions with ``owners`` on every asset (the domains define assets, checks, jobs,
    sensors and schedules only; jobs select assets by key, so they follow)."""
    if not owners:
        return domain
    return dg.Definitions(
        assets=dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=list(owners)), domain.assets or []),
        asset_checks=domain.asset_checks, jobs=domain.jobs, sensors=domain.sensors, schedules=domain.schedules)


@functools.cache
def _defs_from_env() -> dg.Definitions:
    try:
        settings = Settings.from_env()
    except SettingError as exc:
        raise SettingError(f"sessionlake code location: {exc}") from None  # the setting to fix, no chain
    return build_defs(settings)


def __getattr__(name: str):
    """``defs``, built once, when first asked for (`import pipelines.definitions` reads no setting)."""
    if name == "defs":
        return _defs_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])  # Dagster finds the code location's Definitions through dir()
