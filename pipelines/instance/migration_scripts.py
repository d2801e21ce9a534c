"""Dagster's schema migration scripts, read once per process instead of once per database.

Each time Dagster opens one of an instance's databases (runs, schedules, the event log index, and each
run's own database in SQLite), it asks Alembic for the head of its migration scripts, and a new database
is stamped with it: every time through a new `alembic.script.ScriptDirectory`, which loads each of the
~90 revision files shipped with Dagster again (about 20 ms of CPU each time). A first ingest on a new home
loads them 9 times, an ingest on an existing home 5 times.

`read_once()` makes `ScriptDirectory.from_config` hand out one `ScriptDirectory` per process for Dagster's
own scripts (``dagster._core.storage.sql.ALEMBIC_SCRIPTS_LOCATION``) and the same settings: their files
are those of the installed Dagster and do not change while a process runs. A `ScriptDirectory` holds no
connection or run state (each command runs the scripts' ``env.py`` anew with its own config, so what is
stamped, checked or upgraded is exactly what Dagster asks for); any other script location is Alembic's
as before.

It stands on names of Alembic and Dagster that are not Dagster's public API, listed in
`DAGSTER_INTERNALS` and checked by tests/test_migration_scripts.py; tests/test_event_log_storage.py counts
the loads of an instance opened as the CLI opens it, and fails when Dagster stops reading its scripts
through ``from_config`` (the cache would then be silently unused).
"""

from __future__ import annotations

import threading

DAGSTER_INTERNALS = {
    "dagster._core.storage.sql": ("ALEMBIC_SCRIPTS_LOCATION", "check_alembic_revision", "stamp_alembic_rev"),
    "alembic.script": ("ScriptDirectory",),
    "ScriptDirectory": ("from_config", "get_heads"),
}
"""Every name outside Dagster's public API this module relies on, by where it lives."""

_lock = threading.Lock()
_scripts: dict[tuple, object] = {}
_original: list = []
"""``ScriptDirectory.from_config`` as Alembic defines it, once `read_once` has replaced it."""


def read_once() -> None:
    """Read Dagster's migration scripts once in this process (see the module docstring). Idempotent."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION

    with _lock:
        if _original:
            return
        _original.append(ScriptDirectory.__dict__["from_config"].__func__)

        def from_config(cls, config):
            if cls is not ScriptDirectory or config.get_alembic_option("script_location") != ALEMBIC_SCRIPTS_LOCATION:
                return _original[0](cls, config)
            key = (tuple(config.get_version_locations_list() or ()), config.get_alembic_option("sourceless"),
                   config.get_alembic_option("recursive_version_locations"),
                   tuple(sorted((config.messaging_opts or {}).items())))
            with _lock:
                script = _scripts.get(key)
                if script is None:
                    script = _original[0](cls, config)
                    script.get_heads()  # loads the revision files now, under the lock
                    _scripts[key] = script
            return script

        ScriptDirectory.from_config = classmethod(from_config)
