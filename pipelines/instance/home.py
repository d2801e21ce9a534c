"""The Dagster instance the CLI uses: ``DAGSTER_HOME``, or ``<SESSIONLAKE_HOME>/dagster`` when unset.

The instance settings sessionlake needs (pools, run-queue lanes, run monitoring, threaded sensors)
ship as two templates: ``pipelines/instance/dagster.yaml`` (SQLite storage in DAGSTER_HOME, the default) and
``pipelines/instance/dagster-postgres.yaml`` (the same settings, storage on PostgreSQL, connection from the
``DAGSTER_PG_*`` environment variables). ``SESSIONLAKE_DAGSTER_STORAGE`` picks the one copied into a
home that has no ``dagster.yaml`` of its own; an existing one is never touched, only checked: a
Postgres instance that cannot work (extra not installed, a variable unset, a driver SQLAlchemy
cannot import) is an `InstanceConfigError` saying what to do, before Dagster fails somewhere deeper.
The SQLite template's event log is the pooled one (`pipelines.instance.event_log_storage`); its copy names its
own folder as the ``base_dir``, so an instance opened by path never reads another home's logs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path

from resources.config.settings import Settings

INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")
POSTGRES_INSTANCE_YAML = Path(__file__).with_name("dagster-postgres.yaml")
TEMPLATES = {"sqlite": INSTANCE_YAML, "postgres": POSTGRES_INSTANCE_YAML}
STORAGE_KEYS = ("run_storage", "event_log_storage", "schedule_storage")
"""Dagster's per-store settings, the older way to name a storage class (``storage:`` is the newer)."""


class InstanceConfigError(RuntimeError):
    """The instance at DAGSTER_HOME cannot be opened as configured; the message says why and what to do."""


class PoolWaitTimeout(RuntimeError):
    """A pool slot stayed taken by a live run for longer than the caller was willing to wait.

    Raised by `pipelines.instance.run_recovery.wait_for_pool`; defined here, with no Dagster import, so a
    command can name it without paying for Dagster before it knows there is a run to wait for."""


def prepare_dagster_home(settings: Settings) -> Path:
    """Make sure ``DAGSTER_HOME`` is set and holds a usable dagster.yaml; returns the folder.

    Raises `InstanceConfigError` when it asks for Postgres and cannot get it, or when
    ``settings.dagster_storage`` is ``postgres`` and the home's own dagster.yaml is not.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    install_instance_yaml(home, TEMPLATES[settings.dagster_storage])
    postgres = postgres_configs(path)
    if settings.dagster_storage == "postgres" and not postgres:
        raise InstanceConfigError(
            f"SESSIONLAKE_DAGSTER_STORAGE=postgres, but {path} (yours, left as it is) keeps its storage in "
            f"SQLite: move it aside to get {POSTGRES_INSTANCE_YAML.name}, or point DAGSTER_HOME at a new folder")
    for config in postgres:
        _check_postgres(path, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def install_instance_yaml(home: Path, template: Path = INSTANCE_YAML) -> None:
    """Write ``template`` into ``home`` (an existing folder) as its dagster.yaml, unless it has one."""
    target = home / "dagster.yaml"
    if target.exists():
        return
    text = template.read_text().replace("{env: DAGSTER_HOME}", json.dumps(str(home.resolve())))
    target.write_text(text)


def postgres_configs(path: Path) -> list[dict]:
    """The Postgres connection settings (``postgres_url`` or ``postgres_db``) that the instance file at
    ``path`` names, one per store; empty when it keeps its storage elsewhere (SQLite). Raises
    `InstanceConfigError` when the file is not YAML."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InstanceConfigError(f"{path} is not valid YAML: {exc}") from exc
    found = [config["storage"]["postgres"]] if "postgres" in (config.get("storage") or {}) else []
    found += [store.get("config") or {} for key in STORAGE_KEYS if (store := config.get(key))
              and str(store.get("module", "")).startswith("dagster_postgres")]
    return found


def _value(value, unset: list[str]):
    """A setting's value, ``{env: NAME}`` resolved; unset variables are appended to ``unset``."""
    if isinstance(value, dict) and set(value) == {"env"}:
        if value["env"] not in os.environ:
            unset.append(value["env"])
        return os.environ.get(value["env"], "")
    return value


def _check_postgres(path: Path, config: dict) -> None:
    if importlib.util.find_spec("dagster_postgres") is None:
        raise InstanceConfigError(f"{path} keeps Dagster's storage in PostgreSQL, and dagster-postgres is not "
                                  "installed: pip install -e '.[postgres]'")
    unset: list[str] = []
    if "postgres_url" in config:
        url = _value(config["postgres_url"], unset)
    else:
        db = {k: _value(v, unset) for k, v in (config.get("postgres_db") or {}).items()}
        url = f"{db.get('scheme') or 'postgresql'}://"
    if unset:
        raise InstanceConfigError(f"{path} reads its Postgres connection from the environment, and "
                                  f"{', '.join(sorted(set(unset)))} {'is' if len(set(unset)) == 1 else 'are'} not set")
    _check_driver(path, str(url))


def _check_driver(path: Path, url: str) -> None:
    """SQLAlchemy can import the driver that ``url``'s scheme names (or implies: ``postgresql`` alone
    means psycopg 3 since SQLAlchemy 2.1, psycopg2 before)."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    scheme = url.split("://", 1)[0]
    try:
        sqlalchemy.engine.make_url(f"{scheme}://").get_dialect().import_dbapi()
    except ImportError as exc:
        raise InstanceConfigError(
            f"{path}: SQLAlchemy {sqlalchemy.__version__} reads the scheme {scheme!r} as a driver that is not "
            f"installed ({exc}); write postgresql+psycopg2 (the driver the postgres extra installs): "
            "`scheme: postgresql+psycopg2` under postgres_db, or a postgresql+psycopg2:// postgres_url, "
            f"as {POSTGRES_INSTANCE_YAML.name} does") from exc
    except sqlalchemy.exc.ArgumentError as exc:  # NoSuchModuleError: an unknown scheme
        raise InstanceConfigError(f"{path}: {scheme!r} is not a database scheme SQLAlchemy knows ({exc})") from exc


def open_instance():
    """``DagsterInstance.get()`` for the home that `prepare_dagster_home` set, with a failure to open it
    (an unreachable or refusing server, after Dagster's own retries) as an `InstanceConfigError`. Its SQLite
    databases, if it keeps them there, get WAL and ``synchronous=NORMAL`` from their first statement on
    (`pipelines.instance.sqlite_settings`), and Dagster's migration scripts are read once per process
    (`pipelines.instance.migration_scripts`)."""
    import dagster as dg

    from pipelines.instance import migration_scripts, sqlite_settings

    sqlite_settings.use_for(os.environ["DAGSTER_HOME"])
    migration_scripts.read_once()
    try:
        return dg.DagsterInstance.get()
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InstanceConfigError(f"cannot open the Dagster instance at DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}"
                                  f": {detail}") from exc


def missing_settings(instance) -> list[str]:
    """What the shipped instance settings give and ``instance`` lacks, in words: the run-queue lanes, the pool
    limit and run monitoring. Empty for an instance made from `INSTANCE_YAML` or `POSTGRES_INSTANCE_YAML`."""
    missing = []
    concurrency = instance.get_concurrency_config()
    lanes = {(lim.get("key"), lim.get("value")) for lim in
             (concurrency.run_queue_config.tag_concurrency_limits if concurrency.run_queue_config else [])}
    if ("sessionlake/queue", "ingest") not in lanes:
        missing.append("the sessionlake/queue run-queue lanes (one ingest run at a time)")
    if concurrency.pool_config.default_pool_limit is None:
        missing.append("concurrency.pools.default_limit: 1 (ingest and pack GC never overlap)")
    if not instance.run_monitoring_enabled:
        missing.append("run_monitoring (runs stuck starting are failed)")
    return missing


def missing_settings_message(instance) -> str | None:
    """One line naming what `missing_settings` found and how to fix it, or None."""
    missing = missing_settings(instance)
    if not missing:
        return None
    return (f"this Dagster instance lacks {'; '.join(missing)}: start it with `sessionlake dev`, or merge "
            f"{INSTANCE_YAML} into $DAGSTER_HOME/dagster.yaml")


def started_runs(home: Path) -> int:
    """How many runs the instance at ``home`` records as STARTED, in one query and without importing
    Dagster: one connection to its Postgres server, or a read of its SQLite run storage. A command with
    nothing to run uses it to learn that the instance answers, and whether a run (its process or its
    server lost) waits to be marked failed. Raises `InstanceConfigError` when the server does not answer."""
    configs = postgres_configs(home / "dagster.yaml")
    if not configs:
        import sqlite3

        runs_db = home / "history" / "runs.db"
        if not runs_db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=30)) as conn:
            try:
                return conn.execute("SELECT count(*) FROM runs WHERE status = 'STARTED'").fetchone()[0]
            except sqlite3.OperationalError:  # no runs table yet
                return 0
    import sqlalchemy

    url = _postgres_url(configs[0])
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            try:
                return conn.execute(sqlalchemy.text("SELECT count(*) FROM runs WHERE status = 'STARTED'")).scalar()
            except sqlalchemy.exc.ProgrammingError:  # no runs table yet
                return 0
    except sqlalchemy.exc.OperationalError as exc:
        detail = str(exc.orig or exc).strip().splitlines()[0]
        raise InstanceConfigError(f"the Dagster instance at DAGSTER_HOME={home} does not answer: its Postgres server "
                                  f"{url.host}:{url.port or 5432} ({detail}); start it, or fix "
                                  f"{home / 'dagster.yaml'}") from None
    finally:
        engine.dispose()


def _postgres_url(config: dict):
    """The SQLAlchemy URL of a ``postgres_url`` or ``postgres_db`` setting, ``{env: NAME}`` resolved."""
    import sqlalchemy.engine

    unset: list[str] = []
    if "postgres_url" in config:
        return sqlalchemy.engine.make_url(str(_value(config["postgres_url"], unset)))
    db = {k: _value(v, unset) for k, v in (config.get("postgres_db") or {}).items()}
    return sqlalchemy.engine.URL.create(
        db.get("scheme") or "postgresql", username=db.get("username") or None, password=db.get("password") or None,
        host=db.get("hostname") or None, port=int(db["port"]) if db.get("port") else None,
        database=db.get("db_name") or None, query={k: str(v) for k, v in (db.get("params") or {}).items()})
