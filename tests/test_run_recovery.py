"""A killed run never wedges later ones: `sessionlake ingest` SIGKILLed inside its step, then ingest
again; a slot held by a live run is waited for with a message, a bound, and Ctrl-C/SIGTERM honoured."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from bench.corpus import generate_corpus
from pipelines.defs.sessions.assets import JOB_NAME, STEP_NAME
from pipelines.defs.tags import POOL_INGEST
from pipelines.instance.home import install_instance_yaml
from pipelines.instance.run_recovery import HOST_TAG, PROCESS_TAG, claim_run, process_tag

pytestmark = pytest.mark.e2e


def _env(tmp_path, **extra):
    return {**os.environ, "SESSIONLAKE_HOME": str(tmp_path / "home"),
            "SESSIONLAKE_SESSIONS_DIR": str(tmp_path / "tree"), "DAGSTER_HOME": str(tmp_path / "dagster"), **extra}


def _cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _instance(tmp_path):
    """The instance at the test's DAGSTER_HOME, made (with the shipped dagster.yaml) on first use, so a
    test never races a CLI process creating its storage."""
    home = tmp_path / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    install_instance_yaml(home)
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def tree(tmp_path):
    return generate_corpus(tmp_path / "tree", sessions=400, projects=8)


def test_sigkill_inside_the_step_then_the_next_ingest_finishes_with_clean_totals(tmp_path, tree):
    env = _env(tmp_path)
    _instance(tmp_path).dispose()
    killed = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    run = None
    while time.monotonic() < deadline and run is None and killed.poll() is None:
        time.sleep(0.05)
        with _instance(tmp_path) as instance:  # the run is tagged at creation: wait until its step holds the slot
            holders = instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids
            runs = instance.get_runs(dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.STARTED]))
            run = next((r for r in runs if PROCESS_TAG in r.tags and r.run_id in holders), None)
    assert run is not None and killed.poll() is None, "the ingest finished before it could be killed"
    time.sleep(0.3)  # well inside the step: the processors are reading files
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    with _instance(tmp_path) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids == {run.run_id}

    after = _cli("ingest", "--json", env=env, timeout=180)
    assert after.returncode == 0, after.stderr
    assert "waiting for pool" not in after.stderr, "the dead run's slot was freed at once, not waited out"
    assert json.loads(after.stdout)["errors"] == 0
    with _instance(tmp_path) as instance:
        dead = instance.get_run_by_id(run.run_id)
        assert dead.status == dg.DagsterRunStatus.FAILURE
        assert run.run_id not in instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids

    totals = json.loads(_cli("usage", "daily", "--json", env=env).stdout)["totals"]
    assert (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"],
            totals["cacheReadTokens"]) == (tree["input"], tree["output"], tree["cache_creation"], tree["cache_read"])
    assert _cli("archive", "verify", env=env).returncode == 0
    assert _cli("ingest", "--json", env=env).stdout.count('"run_id": null') == 1, "nothing left to do"


def _hold_the_pool(tmp_path, holder_pid: int) -> str:
    """A started ingest run whose (live) process holds the ingest pool's only slot."""
    from pipelines.definitions import defs

    with _instance(tmp_path) as instance:
        run = instance.create_run_for_job(defs.resolve_job_def(JOB_NAME), status=dg.DagsterRunStatus.STARTED)
        claim_run(instance, run.run_id)
        instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag(holder_pid)})
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL_INGEST)
        instance.event_log_storage.claim_concurrency_slot(POOL_INGEST, run.run_id, STEP_NAME)
        assert instance.get_run_by_id(run.run_id).tags[HOST_TAG]
        return run.run_id


def _home_with_a_new_file(tmp_path) -> dict:
    """The environment of a home with one file ingested (its instance made) and one new file to ingest, whose
    ingest waits at most 2 s for the pool."""
    (tmp_path / "tree" / "p").mkdir(parents=True)
    (tmp_path / "tree" / "p" / "s.jsonl").write_text('{"type": "summary", "summary": "x"}\n')
    env = _env(tmp_path, SESSIONLAKE_POOL_WAIT_SEC="2")
    assert _cli("ingest", "--only", "usage", env=env).returncode == 0
    (tmp_path / "tree" / "p" / "t.jsonl").write_text('{"type": "summary", "summary": "y"}\n')
    return env


def test_a_run_failed_elsewhere_whose_process_is_gone_frees_its_slot_at_once(tmp_path):
    env = _home_with_a_new_file(tmp_path)
    holder = subprocess.Popen(["sleep", "120"])
    run_id = _hold_the_pool(tmp_path, holder.pid)
    holder.kill()
    holder.wait()
    with _instance(tmp_path) as instance:  # as Dagster's run monitoring fails it: the slot stays claimed
        instance.report_run_failed(instance.get_run_by_id(run_id))
        assert instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids == {run_id}
    result = _cli("ingest", "--only", "usage", "--json", env=env, timeout=120)
    assert result.returncode == 0 and "waiting for pool" not in result.stderr, result.stderr
    with _instance(tmp_path) as instance:
        assert instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids == set()


def test_a_slot_held_by_a_live_run_is_waited_for_named_and_given_up_on(tmp_path):
    env = _home_with_a_new_file(tmp_path)
    holder = subprocess.Popen(["sleep", "120"])
    try:
        run_id = _hold_the_pool(tmp_path, holder.pid)
        result = _cli("ingest", "--only", "usage", env=env, timeout=120)
        assert result.returncode == 2
        assert f"waiting for pool {POOL_INGEST}: held by {JOB_NAME} {run_id}" in result.stderr
        assert "gave up after 2s" in result.stderr

        waiting = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest", "--only", "usage"],
                                   env={**env, "SESSIONLAKE_POOL_WAIT_SEC": "600"}, stderr=subprocess.PIPE, text=True)
        assert "waiting for pool" in waiting.stderr.readline()
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(15) != 0, "SIGTERM ends the wait"
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing its slot: the next ingest reaps it and runs
    finished = _cli("ingest", "--only", "usage", "--json", env=env, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["assets"]["usage_messages"]["files_processed"] == 1
