"""A sensor's per-project state, in a DuckDB file of its own; the sensor's cursor only names it.

The file is `Settings.sensor_state_path`, apart from the warehouse, because a tick must never wait on
or fail because of a run or a report holding the warehouse (DuckDB has one writer per file).

The state is written in generations: a tick reads the generation its cursor names and writes a new one
only when something changed, returning the cursor ``<generation>:<digest>``. A tick whose result Dagster
does not keep (a "Test sensor" evaluation in the UI, a tick that failed after writing) leaves the
generation the real cursor names untouched, so the state moves exactly when the cursor does. The newest
`KEEP_GENERATIONS` generations are kept; a cursor naming a pruned or unknown generation, or one whose
digest does not match what is stored, starts from an empty state (every project is asked for once, and
the processors skip what they already hold).

Tables: ``sensor_generations`` (one row per generation, with its digest), ``sensor_projects`` (per
project: the fingerprint ingested, and the one it gave up at) and ``sensor_requests`` (per requested run
key: when, and each project's fingerprint asked for).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from resources.config.settings import Settings
from resources.state.migrations import Migration
from resources.state.store import StateStore, fetch_one, json_list, transaction

KEEP_GENERATIONS = 8
LOCK_WAIT_SEC = 10.0
"""Two evaluations at once (the daemon's tick and a UI test) take turns; neither waits on a run."""

SENSOR_MIGRATIONS: list[Migration] = [
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS sensor_generations (
                sensor VARCHAR NOT NULL,
                generation BIGINT NOT NULL,
                digest VARCHAR NOT NULL,
                written_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (sensor, generation)
            )""",
            """CREATE TABLE IF NOT EXISTS sensor_projects (
                sensor VARCHAR NOT NULL,
                generation BIGINT NOT NULL,
                project VARCHAR NOT NULL,
                ingested VARCHAR,
                gave_up VARCHAR
            )""",
            """CREATE TABLE IF NOT EXISTS sensor_requests (
                sensor VARCHAR NOT NULL,
                generation BIGINT NOT NULL,
                run_key VARCHAR NOT NULL,
                requested_at DOUBLE NOT NULL,
                project VARCHAR,
                fingerprint VARCHAR
            )""",
        ),
    ),
]


def sensor_store(settings: Settings) -> StateStore:
    """The sensors' state file, migrated on first use."""
    return StateStore(settings.sensor_state_path, lock_wait_sec=LOCK_WAIT_SEC, migrations=SENSOR_MIGRATIONS)


@dataclass
class SensorState:
    """``digests``: project -> fingerprint ingested (its run succeeded); ``requested``: run key ->
    ``{"at": epoch seconds, "projects": {project: fingerprint asked for}}``; ``gave_up``: project ->
    fingerprint at which it stopped being asked for."""

    digests: dict[str, str] = field(default_factory=dict)
    requested: dict[str, dict] = field(default_factory=dict)
    gave_up: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        """A short digest of the whole state (what the cursor carries beside the generation)."""
        body = json.dumps([self.digests, self.requested, self.gave_up], sort_keys=True).encode()
        return hashlib.blake2b(body, digest_size=6).hexdigest()

    @classmethod
    def from_legacy_cursor(cls, value: dict) -> SensorState:
        """The state a cursor of the earlier format (the whole state as JSON) held."""
        parts = [value.get(key) if isinstance(value.get(key), dict) else {}
                 for key in ("digests", "requested", "gave_up")]
        return cls(*parts)


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """``(generation, digest)`` from a cursor ``"<generation>:<digest>"``; None for anything else."""
    generation, _, digest = (raw or "").partition(":")
    return (int(generation), digest) if generation.isdigit() and digest else None


def load_state(conn: duckdb.DuckDBPyConnection, sensor: str, cursor: str | None) -> tuple[SensorState, str]:
    """The state ``cursor`` names, and how it was found: ``"stored"``, ``"legacy"`` (an earlier cursor's
    JSON), or ``"empty"`` (no cursor, or one naming a generation that is not stored as it says)."""
    if cursor and cursor.lstrip().startswith("{"):
        try:
            value = json.loads(cursor)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return SensorState.from_legacy_cursor(value), "legacy"
    named = parse_cursor(cursor)
    if named is None:
        return SensorState(), "empty"
    generation, digest = named
    row = fetch_one(conn, "SELECT digest FROM sensor_generations WHERE sensor = ? AND generation = ?",
                    [sensor, generation])
    if row is None or row[0] != digest:
        return SensorState(), "empty"
    state = SensorState()
    for project, ingested, gave_up in conn.execute(
            "SELECT project, ingested, gave_up FROM sensor_projects WHERE sensor = ? AND generation = ?",
            [sensor, generation]).fetchall():
        if ingested is not None:
            state.digests[project] = ingested
        if gave_up is not None:
            state.gave_up[project] = gave_up
    for run_key, at, project, fingerprint in conn.execute(
            """SELECT run_key, requested_at, project, fingerprint FROM sensor_requests
               WHERE sensor = ? AND generation = ?""", [sensor, generation]).fetchall():
        entry = state.requested.setdefault(run_key, {"at": at, "projects": {}})
        if project is not None:
            entry["projects"][project] = fingerprint
    return state, "stored"


def save_state(conn: duckdb.DuckDBPyConnection, sensor: str, state: SensorState) -> str:
    """Store ``state`` as the sensor's next generation, prune old ones, and return its cursor."""
    projects = sorted(set(state.digests) | set(state.gave_up))
    requests = [(key, float(entry.get("at", 0.0)), project, fingerprint)
                for key, entry in sorted(state.requested.items())
                for project, fingerprint in (sorted(entry.get("projects", {}).items()) or [(None, None)])]
    digest = state.digest()
    with transaction(conn):
        generation = fetch_one(conn, "SELECT coalesce(max(generation), 0) + 1 FROM sensor_generations "
                                     "WHERE sensor = ?", [sensor])[0]
        conn.execute("INSERT INTO sensor_generations VALUES (?, ?, ?, ?)",
                     [sensor, generation, digest, datetime.now(UTC)])
        if projects:
            conn.execute(
                """INSERT INTO sensor_projects
                   SELECT ?, ?, unnest(?::JSON::VARCHAR[]), unnest(?::JSON::VARCHAR[]), unnest(?::JSON::VARCHAR[])""",
                [sensor, generation, json_list(projects), json_list([state.digests.get(p) for p in projects]),
                 json_list([state.gave_up.get(p) for p in projects])])
        if requests:
            keys, ats, names, fingerprints = (list(column) for column in zip(*requests, strict=True))
            conn.execute(
                """INSERT INTO sensor_requests
                   SELECT ?, ?, unnest(?::JSON::VARCHAR[]), unnest(?::JSON::DOUBLE[]), unnest(?::JSON::VARCHAR[]),
                          unnest(?::JSON::VARCHAR[])""",
                [sensor, generation, *map(json_list, (keys, ats, names, fingerprints))])
        for table in ("sensor_generations", "sensor_projects", "sensor_requests"):
            conn.execute(f"DELETE FROM {table} WHERE sensor = ? AND generation <= ?",
                         [sensor, generation - KEEP_GENERATIONS])
    return f"{generation}:{digest}"
