"""Dagster's migration scripts are read once per process (pipelines/instance/migration_scripts.py): a new
instance and its first run load the revision files once, every database is still stamped at Dagster's head,
and the names it stands on are there."""

import importlib
import sqlite3

import dagster as dg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import pipelines.instance.migration_scripts as migration_scripts
from pipelines.instance.home import install_instance_yaml, open_instance

pytestmark = pytest.mark.unit


@dg.op
def noop():
    return None


@dg.job
def noop_job():
    noop()


def test_a_new_instance_and_its_first_run_read_the_scripts_once_and_stamp_every_database_at_head(tmp_path,
                                                                                                  monkeypatch):
    from dagster._core.storage.sql import get_alembic_config

    loads = []
    load_revisions = ScriptDirectory._load_revisions

    def counted(self):
        loads.append(self.dir)
        yield from load_revisions(self)

    monkeypatch.setattr(ScriptDirectory, "_load_revisions", counted)
    monkeypatch.setattr(migration_scripts, "_scripts", {})  # as in a new process
    folder = tmp_path / "dagster"
    folder.mkdir()
    install_instance_yaml(folder)
    monkeypatch.setenv("DAGSTER_HOME", str(folder))
    with open_instance() as instance:
        assert noop_job.execute_in_process(instance=instance).success
    # runs, schedules, the event log index and the run's own database: each checked, each stamped (9 loads
    # without the cache); a Dagster that builds its ScriptDirectory another way than from_config fails here
    assert len(loads) == 1, loads
    head = migration_scripts._original[0](ScriptDirectory, get_alembic_config(importlib.import_module(
        "dagster._core.storage.runs.sqlite.sqlite_run_storage").__file__)).get_current_head()
    databases = sorted(folder.rglob("*.db"))
    assert {p.name for p in databases} >= {"runs.db", "index.db", "schedules.db"} and len(databases) >= 4
    for path in databases:
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)], path
    other = tmp_path / "other"  # another script location is Alembic's as before (a new ScriptDirectory)
    (other / "versions").mkdir(parents=True)
    config = Config()
    config.set_main_option("script_location", str(other))
    assert ScriptDirectory.from_config(config) is not ScriptDirectory.from_config(config)


def test_the_names_it_stands_on_are_there():
    from dagster.version import __version__

    owners = {"ScriptDirectory": ScriptDirectory}
    missing = [f"{where}.{name}" for where, names in migration_scripts.DAGSTER_INTERNALS.items() for name in names
               if not hasattr(owners.get(where) or importlib.import_module(where), name)]
    assert not missing, (f"Dagster {__version__} / Alembic lack {', '.join(missing)}: see "
                         "pipelines/instance/migration_scripts.py")
