"""Dagster's migration scripts are read once per process (pipelines/instance/migration_scripts.py): the names
it stands on are there, and another script location is Alembic's as before. That a new instance and its
first run load the scripts once and stamp every database at head is checked where the CLI's instance is
(tests/test_event_log_storage.py)."""

import importlib

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import pipelines.instance.migration_scripts as migration_scripts

pytestmark = pytest.mark.unit


def test_another_script_location_gets_a_new_script_directory_each_time(tmp_path):
    migration_scripts.read_once()
    (tmp_path / "versions").mkdir()
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    assert ScriptDirectory.from_config(config) is not ScriptDirectory.from_config(config)


def test_the_names_it_stands_on_are_there():
    from dagster.version import __version__

    owners = {"ScriptDirectory": ScriptDirectory}
    missing = [f"{where}.{name}" for where, names in migration_scripts.DAGSTER_INTERNALS.items() for name in names
               if not hasattr(owners.get(where) or importlib.import_module(where), name)]
    assert not missing, (f"Dagster {__version__} / Alembic lack {', '.join(missing)}: see "
                         "pipelines/instance/migration_scripts.py")
