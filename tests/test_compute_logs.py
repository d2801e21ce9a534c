"""A run of `sessionlake ingest` captures what it prints without Dagster's tail processes
(pipelines/instance/compute_logs.py): the run's stdout/stderr files are written as Dagster writes them,
what it printed still reaches the held-back log, and the names it stands on are there."""

import importlib
import os
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli.run_log import held_back
from pipelines.instance.compute_logs import DAGSTER_INTERNALS, AtEndComputeLogManager, captured_at_end
from pipelines.instance.home import install_instance_yaml

pytestmark = pytest.mark.unit


def _children() -> list[int]:
    kids = []
    for task in os.scandir("/proc/self/task"):
        kids += [int(k) for k in Path(task.path, "children").read_text().split()]
    return kids


CHILDREN_IN_STEP: list[list[int]] = []
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dg.op
def prints() -> None:
    print("to stdout from the step")
    print("to stderr from the step", file=sys.stderr)
    os.write(2, b"to fd 2 from a library\n")
    CHILDREN_IN_STEP.append(_children())


@dg.job
def printing_job():
    prints()


def test_a_run_captures_its_output_without_mirror_processes_and_the_held_back_log_still_gets_it(tmp_path, capfd):
    folder = tmp_path / "dagster"
    folder.mkdir()
    install_instance_yaml(folder)
    held = tmp_path / "logs" / "ingest.log"
    with dg.DagsterInstance.from_config(str(folder)) as instance:
        before, children = instance.compute_log_manager, _children()
        with held_back(held), captured_at_end(instance):
            assert isinstance(instance.compute_log_manager, AtEndComputeLogManager)
            result = printing_job.execute_in_process(instance=instance, run_config=QUIET)
        assert instance.compute_log_manager is before
        assert result.success
        # Dagster's own capture starts a tail and a watcher per stream while the step runs: 4 children
        assert CHILDREN_IN_STEP == [children], CHILDREN_IN_STEP  # noqa: SIM300
        logs = list((folder / "storage" / result.run_id / "compute_logs").iterdir())
        assert {p.suffix for p in logs} == {".out", ".err", ".complete"}
        err = next(p for p in logs if p.suffix == ".err").read_text()
        out = next(p for p in logs if p.suffix == ".out").read_text()
    assert "to stderr from the step" in err  # fd 2 itself is the held-back file (Dagster redirects sys.stderr's)
    assert "to stdout from the step" in out
    assert "to stderr from the step" in held.read_text() and "to fd 2 from a library" in held.read_text()
    assert "to stdout from the step" in capfd.readouterr().out


def test_an_instance_with_another_compute_log_manager_is_left_as_it_is(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"compute_logs": {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager"}}) as instance:
        manager = instance.compute_log_manager
        with captured_at_end(instance):
            assert instance.compute_log_manager is manager


def test_the_names_it_stands_on_are_there(tmp_path):
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.compute_log_manager  # noqa: B018 (loaded, so the private attribute is set)
        owners = {"LocalComputeLogManager": LocalComputeLogManager, "DagsterInstance instance": instance}
        missing = [f"{where}.{name}" for where, names in DAGSTER_INTERNALS.items() for name in names
                   if not hasattr(owners.get(where) or importlib.import_module(where), name)]
    assert not missing, f"Dagster lacks {', '.join(missing)}: see pipelines/instance/compute_logs.py"
