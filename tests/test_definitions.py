"""The code location as the UI shows it: every asset, check, job, sensor and schedule says what it is."""

import pytest

from pipelines.definitions import defs

pytestmark = pytest.mark.unit


def test_every_definition_has_a_description():
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    missing = [f"asset {key.to_user_string()}" for key in graph.get_all_asset_keys()
               if not graph.get(key).description]
    missing += [f"check {key.name} on {key.asset_key.to_user_string()}" for key in graph.asset_check_keys
                if not graph.get_check_spec(key).description]
    missing += [f"job {job.name}" for job in repo.get_all_jobs()
                if not job.name.startswith("__") and not job.description]
    missing += [f"sensor {s.name}" for s in repo.sensor_defs if not s.description]
    missing += [f"schedule {s.name}" for s in repo.schedule_defs if not s.description]
    assert missing == []


def test_the_location_is_named_sessionlake_however_it_is_started():
    from pathlib import Path

    from pipelines.cli.dev import LOCATION_NAME, REPO_WORKSPACE, workspace_file

    assert f"location_name: {LOCATION_NAME}" in REPO_WORKSPACE.read_text()
    assert LOCATION_NAME == "sessionlake"
    assert workspace_file(Path("/nonexistent")) == REPO_WORKSPACE
