"""Dagster on PostgreSQL, as shipped: pipelines/instance/dagster-postgres.yaml on a real server that the tests
start themselves (`tests.postgres_server`), selected the way a user selects it
(``SESSIONLAKE_DAGSTER_STORAGE=postgres`` and the ``DAGSTER_PG_*`` variables).

On a Postgres-backed instance: the session sensor's tick through Dagster's own evaluation (partitions
registered in Postgres, a dead run reaped and its pool slot freed), `sessionlake ingest` as a
subprocess (the run, its per-partition materializations and the pool limits in Postgres; a dead
run's slot freed before the wait), a wait for a slot held by a live run, and a real `sessionlake dev`
whose daemon runs the sensor's run and a backfill over every partition (each run in a worker process
of its own). Bad instance settings end `sessionlake ingest` with exit 2 and a message saying what to do.
A changed pool default fails on Postgres (Dagster issue 33552), and the README's workaround holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import StateResource
from pipelines.defs.sessions.assets import JOB_NAME, STEP_NAME
from pipelines.defs.tags import POOL_INGEST
from pipelines.instance.home import INSTANCE_YAML, POSTGRES_INSTANCE_YAML, prepare_dagster_home
from pipelines.instance.run_recovery import PROCESS_TAG, PoolWaitTimeout, claim_run, process_tag, wait_for_pool
from resources.config.settings import Settings
from tests.conftest import SAMPLE_PROJECT
from tests.live_dagster import LiveDagster, free_port
from tests.postgres_server import PostgresServer, find_binaries

pytestmark = pytest.mark.e2e

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: "
           "apt-get install postgresql (`make test` does it when run as root)")


@pytest.fixture(scope="module")
def server():
    if find_binaries() is None:
        pytest.fail(MISSING)
    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def pg_env(server, monkeypatch) -> dict[str, str]:
    """A new database on the server, selected as a user would; also exported to this process."""
    env = {**server.env(server.create_database(f"t_{uuid.uuid4().hex[:12]}")),
           "SESSIONLAKE_DAGSTER_STORAGE": "postgres"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def pg_instance(tmp_path, settings, pg_env, monkeypatch):
    """The instance at a new DAGSTER_HOME, made by the CLI's own `prepare_dagster_home`."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    home = prepare_dagster_home(Settings.from_env())  # `settings` was made before pg_env set the storage
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _tick(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                      resources={"state": StateResource()}, repository_def=defs.get_repository_def())
    return defs.get_repository_def().get_sensor_def("session_files_sensor").evaluate_tick(context)


def _init_pool(instance) -> None:
    """The ingest pool at its default limit, as a run's first claim makes it. Only when it is not there:
    on Postgres, initializing an existing pool fails (Dagster issue 33552, see the README)."""
    if not instance.event_log_storage.get_concurrency_info(POOL_INGEST).slot_count:
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL_INGEST)


def _dead_run_holding_the_pool(instance) -> str:
    """A STARTED ingest run of this host whose process has exited, holding the ingest pool's slot."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = instance.create_run_for_job(defs.resolve_job_def(JOB_NAME), status=dg.DagsterRunStatus.STARTED)
    claim_run(instance, run.run_id)
    instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag(gone.pid)})
    _init_pool(instance)
    instance.event_log_storage.claim_concurrency_slot(POOL_INGEST, run.run_id, STEP_NAME)
    assert instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids == {run.run_id}
    return run.run_id


def test_the_template_keeps_every_setting_of_the_shipped_instance_but_storage():
    sqlite, postgres = (yaml.safe_load(path.read_text()) for path in (INSTANCE_YAML, POSTGRES_INSTANCE_YAML))
    assert "storage" not in sqlite and postgres.pop("storage").keys() == {"postgres"}
    assert sqlite.pop("event_log_storage")["class"] == "PooledSqliteEventLogStorage"  # SQLite's own event log
    assert postgres == sqlite


def test_sensor_tick_on_postgres_registers_partitions_requests_one_run_and_reaps_a_dead_run(pg_instance, settings):
    from dagster_postgres import PostgresRunStorage

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    dead = _dead_run_holding_the_pool(pg_instance)
    first = _tick(pg_instance)
    assert pg_instance.get_dynamic_partitions(projects_partitions.name) == [SAMPLE_PROJECT]
    [request] = first.run_requests
    assert request.partition_key == SAMPLE_PROJECT
    assert pg_instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert pg_instance.event_log_storage.get_concurrency_info(POOL_INGEST).active_run_ids == set()
    again = _tick(pg_instance, first.cursor)
    assert again.run_requests == [] and "no changes" in again.skip_message


def test_a_slot_held_by_a_live_run_is_waited_for_and_given_up_on(pg_instance):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        run = pg_instance.create_run_for_job(defs.resolve_job_def(JOB_NAME), status=dg.DagsterRunStatus.STARTED)
        claim_run(pg_instance, run.run_id)
        pg_instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag(holder.pid)})
        _init_pool(pg_instance)
        assert pg_instance.event_log_storage.claim_concurrency_slot(POOL_INGEST, run.run_id, STEP_NAME).is_claimed
        said = []
        with pytest.raises(PoolWaitTimeout, match=f"held by {JOB_NAME} {run.run_id}"):
            wait_for_pool(pg_instance, POOL_INGEST, timeout_sec=0.5, say=said.append, poll_sec=0.1)
        assert said == [f"waiting for pool {POOL_INGEST}: held by {JOB_NAME} {run.run_id} (STARTED)"]
    finally:
        holder.kill()
        holder.wait()
    wait_for_pool(pg_instance, POOL_INGEST, timeout_sec=5, say=print)  # its process is gone: reaped, slot freed


def test_sessionlake_ingest_on_postgres_records_the_run_and_frees_a_dead_runs_slot(tmp_path, samples_root, pg_env):
    env = {**os.environ, **pg_env, "SESSIONLAKE_HOME": str(tmp_path / "home"),
           "SESSIONLAKE_SESSIONS_DIR": str(samples_root), "DAGSTER_HOME": str(tmp_path / "dagster")}
    first = _cli("ingest", "--json", env=env)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["success"] and result["assets"]["usage_messages"]["files_processed"] == 4
    assert (tmp_path / "dagster" / "dagster.yaml").read_text() == POSTGRES_INSTANCE_YAML.read_text()
    assert not list((tmp_path / "dagster").glob("**/*.db")), "no SQLite storage beside the Postgres one"

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_run_by_id(result["run_id"]).status == dg.DagsterRunStatus.SUCCESS
        for asset in ("session_files", "usage_messages", "memory_records", "session_archive"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {SAMPLE_PROJECT}
        assert instance.event_log_storage.get_concurrency_info(POOL_INGEST).slot_count == 1
        lanes = {(limit["key"], limit.get("value")): limit["limit"]
                 for limit in instance.get_concurrency_config().run_queue_config.tag_concurrency_limits}
        assert lanes == {("sessionlake/queue", "ingest"): 1, ("sessionlake/queue", "capture"): 1}
        dead = _dead_run_holding_the_pool(instance)

    with open(next(samples_root.rglob("fed8ce56*.jsonl")), "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    second = _cli("ingest", "--json", env={**env, "SESSIONLAKE_POOL_WAIT_SEC": "30"})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["assets"]["usage_messages"]["files_processed"] == 1
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert len(instance.get_runs(dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.SUCCESS]))) == 2


def test_ingest_with_nothing_to_do_asks_the_server_and_fails_the_runs_it_lost(tmp_path, samples_root, pg_env):
    env = {**os.environ, **pg_env, "SESSIONLAKE_HOME": str(tmp_path / "home"),
           "SESSIONLAKE_SESSIONS_DIR": str(samples_root), "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", "--only", "usage", env=env).returncode == 0
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        dead = _dead_run_holding_the_pool(instance)  # left STARTED when its process went with the server
    quiet = _cli("ingest", "--only", "usage", env=env)
    assert quiet.returncode == 0 and "nothing to ingest" in quiet.stdout, quiet.stderr
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE

    down = _cli("ingest", "--only", "usage", env={**env, "DAGSTER_PG_PORT": str(free_port())}, timeout=120)
    assert down.returncode == 2 and down.stdout == ""
    [line] = down.stderr.splitlines()
    assert line.startswith("sessionlake ingest: the Dagster instance at DAGSTER_HOME=") and "does not answer" in line


def test_sessionlake_dev_on_postgres_runs_the_sensor_and_a_backfill_in_worker_processes(tmp_path, pg_env):
    from tests.test_live_daemon import PROJECTS, write_tree

    sessions = tmp_path / "projects"
    write_tree(sessions)
    projects = sorted(PROJECTS[:3])
    for extra in PROJECTS[3:]:
        shutil.rmtree(sessions / extra)
    with LiveDagster(home=tmp_path / "home", sessions_dir=sessions, sensor_interval_sec=5, env=pg_env) as live:
        dev_pid = live.proc.pid
        sensor_run = live.wait_for_run(lambda r: r["jobName"] == JOB_NAME, timeout_sec=240,
                                       what="the sensor's ingest run")
        assert any(sensor_run["runId"] in t["runIds"] for t in live.sensor_ticks()), "a daemon tick requested it"
        backfill = live.wait_for_backfill(live.launch_backfill(all_partitions=True), timeout_sec=240)
        assert len(backfill["runIds"]) == 1, "single-run backfill policy"
    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
        for run_id in (sensor_run["runId"], *backfill["runIds"]):
            run = instance.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert int(run.tags[PROCESS_TAG].split(":")[0]) != dev_pid, "a run worker of its own"
        assert instance.get_materialized_partitions(dg.AssetKey("usage_messages")) == set(projects)


def test_a_changed_pool_default_breaks_on_postgres_and_the_documented_workaround_holds(pg_instance, tmp_path):
    """Dagster issue 33552, as the README describes it: remove the README's note once this fails."""
    import sqlalchemy.exc

    _init_pool(pg_instance)
    home = tmp_path / "dagster"
    (home / "dagster.yaml").write_text((home / "dagster.yaml").read_text().replace("default_limit: 1",
                                                                                   "default_limit: 2"))
    with dg.DagsterInstance.from_config(str(home)) as changed, \
            pytest.raises(sqlalchemy.exc.InternalError, match="InFailedSqlTransaction"):
        changed.event_log_storage.initialize_concurrency_limit_to_default(POOL_INGEST)
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "set", POOL_INGEST,
                           "2"], env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with dg.DagsterInstance.from_config(str(home)) as changed:
        (pool,) = [p for p in changed.event_log_storage.get_pool_limits() if p.name == POOL_INGEST]
        assert (pool.limit, pool.from_default) == (2, False), "set by hand: Dagster no longer re-initializes it"


@pytest.mark.parametrize("case", ["unset", "sqlite_home", "default_driver", "unreachable"])
def test_bad_instance_settings_exit_2_saying_what_to_do(tmp_path, samples_root, server, case):
    env = {**os.environ, **server.env("postgres"), "SESSIONLAKE_DAGSTER_STORAGE": "postgres",
           "SESSIONLAKE_HOME": str(tmp_path / "home"), "SESSIONLAKE_SESSIONS_DIR": str(samples_root),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    home = tmp_path / "dagster"
    home.mkdir()
    if case == "unset":
        del env["DAGSTER_PG_PASSWORD"], env["DAGSTER_PG_DB"]
        expected = "DAGSTER_PG_DB, DAGSTER_PG_PASSWORD are not set"
    elif case == "sqlite_home":
        shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
        expected = "keeps its storage in SQLite"
    elif case == "default_driver":
        import sqlalchemy

        # The trap this case reproduces: SQLAlchemy >= 2.1 reads a bare `postgresql` as psycopg 3, which
        # the postgres extra does not install. Both hold in the environment `make install` builds.
        assert tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) >= (2, 1), sqlalchemy.__version__
        assert not _importable("psycopg"), "psycopg 3 is installed: the default driver would work"
        (home / "dagster.yaml").write_text(POSTGRES_INSTANCE_YAML.read_text().replace(
            "scheme: postgresql+psycopg2", "scheme: postgresql"))
        expected = "`scheme: postgresql+psycopg2` under postgres_db"
    else:  # through `sessionlake dev`, which opens a Postgres instance before it starts Dagster
        env["DAGSTER_PG_PORT"] = str(free_port())
        expected = "cannot open the Dagster instance"
    done = _cli("dev" if case == "unreachable" else "ingest", env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    state = tmp_path / "home" / "state.duckdb"
    if state.exists():  # deciding whether there is work opens the warehouse; nothing may be ingested without its run
        with duckdb.connect(str(state), read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM usage_messages").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM session_processor_state").fetchone()[0] == 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_settings_reject_an_unknown_storage(monkeypatch, tmp_path):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path))
    monkeypatch.setenv("SESSIONLAKE_DAGSTER_STORAGE", "mysql")
    with pytest.raises(ValueError, match="use one of sqlite, postgres"):
        Settings.from_env()
    monkeypatch.setenv("SESSIONLAKE_DAGSTER_STORAGE", "Postgres")
    assert Settings.from_env().dagster_storage == "postgres"


def _wait_for_a_started_run(server, db_name: str, timeout_sec: float = 120.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout_sec
    with contextlib.closing(server.connect(db_name)) as conn:
        while time.monotonic() < deadline:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM runs WHERE status = 'STARTED'")
                    if cur.fetchone()[0]:
                        return
            except psycopg2.errors.UndefinedTable:  # the instance's tables are not made yet
                pass
            time.sleep(0.02)
    raise AssertionError("no run started")


def test_a_server_lost_mid_run_ends_ingest_in_one_line_and_the_next_run_completes(tmp_path, server, pg_env):
    from tests.test_live_daemon import warehouse, write_tree

    sessions = tmp_path / "projects"
    expected = write_tree(sessions)
    env = {**os.environ, **pg_env, "SESSIONLAKE_HOME": str(tmp_path / "home"),
           "SESSIONLAKE_SESSIONS_DIR": str(sessions), "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("SESSIONLAKE_DEBUG", None)
    ingest = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_started_run(server, pg_env["DAGSTER_PG_DB"])
        server.halt()  # the module's server: started again below, whatever happens
        out, err = ingest.communicate(timeout=300)
    finally:
        ingest.kill()
        if not server.running:
            server.resume()
    assert ingest.returncode == 2 and out == "", (out, err)
    [line] = err.splitlines()
    assert line.startswith("sessionlake ingest: ") and "lost the Dagster instance's Postgres server" in line, line

    again = _cli("ingest", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["success"]
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=JOB_NAME))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
    rows = warehouse(tmp_path / "home", sessions)
    assert rows == {p: {k: fig[k] for k in ("responses", "input", "output")} for p, fig in expected.items()}
