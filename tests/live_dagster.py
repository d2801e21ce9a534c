"""A real `sessionlake dev` (Dagster webserver + daemon) in a subprocess, for end-to-end tests,
benchmarks and screenshots. Not a test module (no ``test_`` prefix); no dependency beyond the stdlib.

    from tests.live_dagster import LiveDagster

    with LiveDagster(home=tmp / "home", sessions_dir=tmp / "projects", sensor_interval_sec=5) as live:
        run = live.wait_for_run(lambda r: r["status"] == "SUCCESS", what="the sensor's first run")
        backfill_id = live.launch_backfill(all_partitions=True)
        live.gql("query { version }")
        print(live.url, live.log_tail())

`LiveDagster` starts ``sessionlake dev`` on 127.0.0.1 and a free port with its own environment
(``SESSIONLAKE_HOME``, ``SESSIONLAKE_SESSIONS_DIR``, ``DAGSTER_HOME`` under ``home`` unless given,
``SESSIONLAKE_SENSOR_INTERVAL_SEC``), in a new session (process group), and waits, bounded, until
the webserver answers GraphQL and the ``sessionlake`` location has loaded. Every process it starts
carries a marker in its environment; `stop()` (and leaving the ``with`` block) kills the process
group, then every process that still carries the marker (run workers and code servers that started
sessions of their own), by pid, and raises if any survives.

Waits raise `LiveDagsterError` with the tail of the dagster dev log (``<home>/dagster-dev.log``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from pipelines.instance.home import install_instance_yaml

REPO = Path(__file__).resolve().parents[1]
LOCATION = "sessionlake"
MARKER_ENV = "SESSIONLAKE_LIVE_DAGSTER_ID"
"""Set in the environment of every process the harness starts (inherited by all their children)."""

RUN_FIELDS = "runId status jobName startTime endTime tags { key value } stepKeysToExecute"


class LiveDagsterError(AssertionError):
    """A bounded wait ran out, or GraphQL answered an error; the message ends with the dagster dev log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_pids(marker: str) -> list[int]:
    """Every live process whose environment carries ``MARKER_ENV=marker`` (Linux /proc)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != b"Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


class LiveDagster:
    """``sessionlake dev`` over ``sessions_dir`` with data home ``home``; see the module docstring.

    ``command``: ``"sessionlake"`` (default: ``sessionlake dev``) or ``"dagster"`` (``dagster dev -w
    workspace.yaml`` from the repo root). ``env``: extra environment variables.
    """

    def __init__(self, home: Path | str, sessions_dir: Path | str, dagster_home: Path | str | None = None,
                 sensor_interval_sec: int = 5, env: dict[str, str] | None = None, command: str = "sessionlake",
                 start_timeout_sec: float = 240.0):
        self.home = Path(home)
        self.sessions_dir = Path(sessions_dir)
        self.dagster_home = Path(dagster_home) if dagster_home else self.home / "dagster"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "dagster-dev.log"
        self.marker = uuid.uuid4().hex
        self.command = command
        self.start_timeout_sec = start_timeout_sec
        self.env = {**os.environ, "SESSIONLAKE_HOME": str(self.home),
                    "SESSIONLAKE_SESSIONS_DIR": str(self.sessions_dir), "DAGSTER_HOME": str(self.dagster_home),
                    "SESSIONLAKE_SENSOR_INTERVAL_SEC": str(sensor_interval_sec), MARKER_ENV: self.marker,
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LiveDagster:
        self.home.mkdir(parents=True, exist_ok=True)
        bindir = Path(sys.executable).parent
        if self.command == "dagster":
            self.dagster_home.mkdir(parents=True, exist_ok=True)
            install_instance_yaml(self.dagster_home)
            cmd = [str(bindir / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
        else:
            cmd = [str(bindir / "sessionlake"), "dev", "--host", "127.0.0.1", "--port", str(self.port)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing it; closed in stop()
        self._log = log
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_until_ready(self.start_timeout_sec)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LiveDagster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_until_ready(self, timeout_sec: float) -> None:
        """Until GraphQL answers and the ``sessionlake`` location is LOADED (a load error raises at once)."""
        query = ("query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus "
                 "locationOrLoadError { __typename ... on PythonError { message } } } } } }")

        def loaded():
            if self.proc.poll() is not None:
                raise self._error(f"dagster dev exited with code {self.proc.returncode} before it was ready")
            try:
                data = self.gql(query, timeout=10)
            except (OSError, LiveDagsterError):
                return None
            entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
            entry = entries.get(LOCATION)
            if not entry or entry["loadStatus"] != "LOADED":
                return None
            if entry["locationOrLoadError"]["__typename"] == "PythonError":
                raise self._error(f"location {LOCATION} failed to load: {entry['locationOrLoadError']['message']}")
            return entry

        self.wait(loaded, timeout_sec, f"the webserver on {self.url} to load location {LOCATION}", poll_sec=1.0)

    def stop(self, grace_sec: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``grace_sec``, then every marked
        process by pid; raises `LiveDagsterError` if any process survives."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_sec
        while time.monotonic() < deadline and (self.proc.poll() is None or marked_pids(self.marker)):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # SIGKILL again until none is left: a process may have been spawned (a run worker, a compute-log
        # tail) between the group kill and the marker scan.
        end = time.monotonic() + 30
        while (survivors := marked_pids(self.marker) + _group_members(pgid)) and time.monotonic() < end:
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.proc = None
        self._log.close()
        if survivors:
            raise LiveDagsterError(f"processes survived stop(): {[(pid, _cmdline(pid)) for pid in survivors]}")

    # -- GraphQL -----------------------------------------------------------------------------

    def gql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        """POST ``query`` to ``/graphql``; returns ``data``, raises `LiveDagsterError` on ``errors``."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise LiveDagsterError(f"GraphQL HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
        if payload.get("errors"):
            raise LiveDagsterError(f"GraphQL errors: {json.dumps(payload['errors'])[:2000]}")
        return payload["data"]

    # -- waits and helpers -------------------------------------------------------------------

    def wait(self, predicate: Callable[[], object], timeout_sec: float, what: str, poll_sec: float = 1.0):
        """Poll ``predicate`` until it returns something truthy (returned); raise with the log tail on timeout."""
        deadline = time.monotonic() + timeout_sec
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise self._error(f"timed out after {timeout_sec:.0f}s waiting for {what}")
            if self.proc is not None and self.proc.poll() is not None:
                raise self._error(f"dagster dev exited with code {self.proc.returncode} while waiting for {what}")
            time.sleep(poll_sec)

    def runs(self, limit: int = 100, tags: dict[str, str] | None = None) -> list[dict]:
        """The latest runs, newest first: dicts with ``runId status jobName startTime endTime tags
        stepKeysToExecute`` (``tags`` as a dict)."""
        query = ("query($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) { __typename "
                 f"... on Runs {{ results {{ {RUN_FIELDS} }} }} ... on PythonError {{ message }} }} }}")
        run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]} if tags else None
        data = self.gql(query, {"filter": run_filter, "limit": limit})["runsOrError"]
        if data["__typename"] != "Runs":
            raise self._error(f"runsOrError: {data}")
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["results"]]

    def wait_for_run(self, match: Callable[[dict], bool] = lambda r: True, timeout_sec: float = 180.0,
                     what: str = "a run", statuses: tuple[str, ...] = ("SUCCESS",), tags: dict | None = None) -> dict:
        """Wait for the newest run that ``match`` accepts to reach one of ``statuses`` (default SUCCESS);
        a matching run that ends in another terminal status raises at once."""
        terminal = {"SUCCESS", "FAILURE", "CANCELED"}

        def done():
            for run in self.runs(tags=tags):
                if not match(run):
                    continue
                if run["status"] in statuses:
                    return run
                if run["status"] in terminal:
                    raise self._error(f"{what}: run {run['runId']} ended {run['status']}")
                return None
            return None

        return self.wait(done, timeout_sec, what)

    def launch_backfill(self, partition_names: list[str] | None = None, all_partitions: bool = False,
                        asset_keys: list[str] | None = None, title: str | None = None) -> str:
        """``launchPartitionBackfill`` over ``partition_names`` (or ``all_partitions``) of ``asset_keys``
        (default: the four session assets); returns the backfill id."""
        from pipelines.defs.sessions.assets import INGEST_ASSETS

        params: dict = {"assetSelection": [{"path": [k]} for k in (asset_keys or INGEST_ASSETS)]}
        if all_partitions:
            params["allPartitions"] = True
        else:
            params["partitionNames"] = list(partition_names or [])
        if title:
            params["title"] = title
        query = ("mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
                 "... on LaunchBackfillSuccess { backfillId } ... on Error { message } "
                 "... on PythonError { message stack } } }")
        result = self.gql(query, {"p": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise self._error(f"launchPartitionBackfill: {result}")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        """``{id, status, numPartitions, runIds}`` of a backfill (``runIds``: every run it launched)."""
        query = ("query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename "
                 "... on PartitionBackfill { id status numPartitions } ... on PythonError { message } } }")
        data = self.gql(query, {"id": backfill_id})["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise self._error(f"partitionBackfillOrError: {data}")
        data["runIds"] = [r["runId"] for r in self.runs(limit=1000, tags={"dagster/backfill": backfill_id})]
        return data

    def wait_for_backfill(self, backfill_id: str, timeout_sec: float = 180.0) -> dict:
        """Until the backfill is COMPLETED (or another terminal status, which raises)."""
        def done():
            data = self.backfill(backfill_id)
            if data["status"] in ("COMPLETED", "COMPLETED_SUCCESS"):
                return data
            if data["status"] in ("FAILED", "CANCELED", "COMPLETED_FAILED", "FAILING"):
                raise self._error(f"backfill {backfill_id} ended {data['status']}: {data}")
            return None

        return self.wait(done, timeout_sec, f"backfill {backfill_id} to complete")

    def materializations(self, asset_key: str, limit: int = 1000) -> list[dict]:
        """Materializations of ``asset_key``, newest first: ``{partition, runId, timestamp, metadata}``
        (metadata: label -> int/float/text value)."""
        return self._asset_events(asset_key, "assetMaterializations", limit)

    def observations(self, asset_key: str, limit: int = 1000) -> list[dict]:
        """Observations of ``asset_key``, newest first, in the same shape as `materializations`."""
        return self._asset_events(asset_key, "assetObservations", limit)

    def _asset_events(self, asset_key: str, field: str, limit: int) -> list[dict]:
        query = ("query($key: AssetKeyInput!, $limit: Int) { assetOrError(assetKey: $key) { __typename "
                 f"... on Asset {{ {field}(limit: $limit) {{ partition runId timestamp metadataEntries {{ "
                 "label __typename ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } "
                 "... on TextMetadataEntry { text } } } } } }")
        data = self.gql(query, {"key": {"path": [asset_key]}, "limit": limit})["assetOrError"]
        if data["__typename"] != "Asset":
            return []
        out = []
        for m in data[field]:
            meta = {e["label"]: e.get("intValue", e.get("floatValue", e.get("text"))) for e in m["metadataEntries"]}
            out.append({"partition": m["partition"], "runId": m["runId"], "timestamp": int(m["timestamp"]),
                        "metadata": meta})
        return out

    def sensor_ticks(self, sensor: str = "session_files_sensor", limit: int = 50) -> list[dict]:
        """The sensor's latest ticks, newest first: ``{status, timestamp, endTimestamp, runIds, skipReason,
        cursor, error}``, plus the sensor's stored ``cursor`` on the first entry as ``sensorCursor``."""
        query = ("query($s: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $s) { __typename "
                 "... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } "
                 "ticks(limit: $limit) { status timestamp endTimestamp runIds skipReason cursor "
                 "error { message } } } } ... on PythonError { message } } }")
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": sensor}
        data = self.gql(query, {"s": selector, "limit": limit})["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise self._error(f"sensorOrError: {data}")
        state = data["sensorState"]
        ticks = state["ticks"]
        if ticks:
            ticks[0]["sensorCursor"] = (state.get("typeSpecificData") or {}).get("lastCursor")
        return ticks

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _error(self, message: str) -> LiveDagsterError:
        return LiveDagsterError(f"{message}\n--- tail of {self.log_path} ---\n{self.log_tail()}")
