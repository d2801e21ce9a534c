"""End to end through the user's path: a real `sessionlake dev` (webserver + daemon) on loopback over
a temp tree of 12 projects, driven and inspected through GraphQL, with DuckDB read at the end.

1. the session sensor's first run ingests every project, in one run of one step, and each partition's
   materialization carries that project's own numbers (equal to the generator's and to DuckDB's);
2. a backfill over all partitions launched through GraphQL runs as ONE run and succeeds;
3. after appending to 2 projects, the next sensor run ingests exactly those 2 (only their partitions
   get new materializations, files_processed is what changed);
4. the sensor's run for a big new session is killed in its step (its process group, SIGKILL), then
   every process started is stopped by pid;
5. `dagster dev -w workspace.yaml` on the same DAGSTER_HOME sees the same location `sessionlake`: the
   sensor's tick history and cursor carry over; the killed run is marked failed and the sensor's next
   run ingests its project (done when a run succeeded, not when it was asked for), and nothing else.

Slow machines are expected: waits are bounded but generous, and fail with the dagster dev log tail.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.instance.run_recovery import PROCESS_TAG
from resources.config.settings import Settings
from resources.state.store import StateStore
from tests.live_dagster import LiveDagster, marked_pids

pytestmark = pytest.mark.e2e

PROJECTS = [f"-home-dev-live-{i:02d}" for i in range(12)]
CHANGED = [PROJECTS[3], PROJECTS[8]]
KILLED = PROJECTS[5]
PROCESSOR_ASSETS = ("usage_messages", "memory_records", "session_archive")
ALL_ASSETS = ("session_files", *PROCESSOR_ASSETS)
RUN_WAIT_SEC = 300.0


def _ts(minutes: int) -> str:
    t = datetime(2025, 7, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def session_lines(project: str, session: int, responses: range, tag: str = "") -> tuple[list[bytes], dict]:
    """Claude Code lines for ``responses`` of one session: a user prompt, then an answer written as two
    lines sharing message.id/requestId (input and cache repeated, output final on the last line).
    Ids are unique per project, session and response. Returns the lines and their token totals."""
    sid = f"{project[-2:]}{session:02d}0000-0000-4000-8000-000000000000"
    lines, totals = [], {"responses": 0, "input": 0, "output": 0}
    for r in responses:
        uid = f"u-{project}-{session}-{r}{tag}"
        base = {"isSidechain": False, "userType": "external", "cwd": f"/home/dev/{project}", "sessionId": sid,
                "version": "1.0.17", "gitBranch": "main"}
        lines.append(json.dumps({**base, "parentUuid": None, "type": "user", "uuid": uid, "timestamp": _ts(r * 3),
                                 "message": {"role": "user", "content": f"prompt {r} about {project}"}}).encode())
        msg, req = f"msg_{project}_{session}_{r}", f"req_{project}_{session}_{r}"
        usage = {"input_tokens": 10 + r, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}
        for b, (block, out) in enumerate(((({"type": "text", "text": f"answer {r} for {project}"}), 3),
                                           ({"type": "tool_use", "id": f"toolu_{msg}", "name": "Bash",
                                             "input": {"command": "pytest -q"}}, 200 + r))):
            lines.append(json.dumps({**base, "parentUuid": uid, "type": "assistant", "requestId": req,
                                     "uuid": f"a-{msg}-{b}", "timestamp": _ts(r * 3 + 1),
                                     "message": {"id": msg, "type": "message", "role": "assistant",
                                                 "model": "claude-sonnet-4-20250514", "content": [block],
                                                 "usage": {**usage, "output_tokens": out}}}).encode())
        totals["responses"] += 1
        totals["input"] += usage["input_tokens"]
        totals["output"] += 200 + r
    return lines, totals


def write_tree(root: Path) -> dict[str, dict]:
    """12 projects of 1-3 sessions with 2-5 responses each; returns per-project expected figures."""
    expected = {}
    for i, project in enumerate(PROJECTS):
        fig = {"files": 0, "bytes": 0, "responses": 0, "input": 0, "output": 0}
        for s in range(1 + i % 3):
            lines, totals = session_lines(project, s, range(2 + (i + s) % 4))
            path = root / project / f"session-{s}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\n".join(lines) + b"\n")
            fig["files"] += 1
            fig["bytes"] += path.stat().st_size
            for k in ("responses", "input", "output"):
                fig[k] += totals[k]
        expected[project] = fig
    return expected


def by_partition(mats: list[dict], run_ids: str | set[str]) -> dict[str, dict]:
    """Metadata by partition of the materializations made by ``run_ids`` (one run id or a set)."""
    run_ids = {run_ids} if isinstance(run_ids, str) else run_ids
    return {m["partition"]: m["metadata"] for m in mats if m["runId"] in run_ids}


def warehouse(settings_home: Path, sessions_dir: Path) -> dict[str, dict]:
    settings = Settings(home=settings_home, sessions_dir=sessions_dir)
    with StateStore.from_settings(settings).connect(read_only=True) as conn:
        rows = conn.execute("SELECT project, count(*), sum(input_tokens), sum(output_tokens) FROM usage_messages "
                            "GROUP BY project").fetchall()
    return {p: {"responses": n, "input": int(i), "output": int(o)} for p, n, i, o in rows}


def wait_for_new_run(live: LiveDagster, known: set[str], what: str, job: str | None = None) -> dict:
    return live.wait_for_run(lambda r: r["runId"] not in known and (job is None or r["jobName"] == job),
                             timeout_sec=RUN_WAIT_SEC, what=what)


def change_runs(live: LiveDagster, seen: set[str]) -> list[dict] | None:
    """The ingest runs not in ``seen``, once all of them succeeded and together materialized every
    project in CHANGED (None until then); a failed one raises."""
    runs = [r for r in live.runs() if r["jobName"] == "ingest_sessions" and r["runId"] not in seen]
    failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
    assert not failed, f"ingest run(s) failed: {failed}\n{live.log_tail()}"
    if not runs or any(r["status"] != "SUCCESS" for r in runs):
        return None
    ids = {r["runId"] for r in runs}
    covered = {m["partition"] for m in live.materializations("session_files") if m["runId"] in ids}
    return runs if covered >= set(CHANGED) else None


def run_shape(live: LiveDagster, run_id: str) -> dict:
    """How a run executed: the steps that started (STEP_START events), the steps that were skipped,
    and whether its steps ran in the run's own process (in-process executor) rather than one
    subprocess per step."""
    query = ("query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events { "
             "__typename ... on MessageEvent { message } ... on StepEvent { stepKey } } } } }")
    events = live.gql(query, {"id": run_id})["logsForRun"]["events"]
    engine = [e["message"] for e in events if e["__typename"] == "EngineEvent"]
    return {"started": [e["stepKey"] for e in events if e["__typename"] == "ExecutionStepStartEvent"],
            "skipped": [e["stepKey"] for e in events if e["__typename"] == "ExecutionStepSkippedEvent"],
            "in_process": any(m.startswith("Executing steps in process") for m in engine),
            "subprocess_steps": sum(e["__typename"] == "StepWorkerStartedEvent" for e in events)}


def assert_one_step_in_process(live: LiveDagster, run: dict) -> dict:
    shape = run_shape(live, run["runId"])
    assert shape["started"] == ["ingest_projects"], (run["runId"], run["jobName"], shape)
    assert shape["in_process"] and not shape["subprocess_steps"], (run["runId"], run["jobName"], shape)
    return shape


def test_live_daemon_ingests_backfills_and_reingests_only_what_changed(tmp_path: Path) -> None:
    sessions_dir, home = tmp_path / "projects", tmp_path / "home"
    expected = write_tree(sessions_dir)
    report: dict = {}
    started = time.monotonic()
    with LiveDagster(home=home, sessions_dir=sessions_dir, sensor_interval_sec=5) as live:
        report["ready_sec"] = round(time.monotonic() - started, 1)
        marker = live.marker

        # 1. the sensor's first run covers all 12 projects, one run, one step
        first = wait_for_new_run(live, set(), "the session sensor's first ingest run", job="ingest_sessions")
        report["first_run_ready_to_success_sec"] = round(time.monotonic() - started - report["ready_sec"], 1)
        report["first_run_wall_sec"] = round(first["endTime"] - first["startTime"], 1)
        assert first["tags"].get("dagster/sensor_name") == "session_files_sensor", first["tags"]
        assert_one_step_in_process(live, first)
        ingest_runs = [r for r in live.runs() if r["jobName"] == "ingest_sessions"]
        assert [r["runId"] for r in ingest_runs] == [first["runId"]], f"one run for the first change set: {ingest_runs}"
        for asset in ALL_ASSETS:
            got = by_partition(live.materializations(asset), first["runId"])
            assert sorted(got) == sorted(PROJECTS), f"{asset}: partitions materialized by the first run: {sorted(got)}"
        sessions_meta = by_partition(live.materializations("session_files"), first["runId"])
        usage_meta = by_partition(live.materializations("usage_messages"), first["runId"])
        archive_meta = by_partition(live.materializations("session_archive"), first["runId"])
        memory_meta = by_partition(live.materializations("memory_records"), first["runId"])
        for project, fig in expected.items():
            assert sessions_meta[project]["files"] == fig["files"], project
            assert sessions_meta[project]["bytes_on_disk"] == fig["bytes"], project
            assert sessions_meta[project]["files_new"] == fig["files"], project
            for meta in (usage_meta, archive_meta, memory_meta):
                assert meta[project]["files_scanned"] == fig["files"], (project, meta[project])
                assert meta[project]["files_processed"] == fig["files"], (project, meta[project])
                assert meta[project]["files_failed"] == 0, (project, meta[project])
                assert meta[project]["bytes_read"] == fig["bytes"], (project, meta[project])
            assert usage_meta[project]["responses_extracted"] == fig["responses"], (project, usage_meta[project])
            # what the partition holds, as the UI shows it: the warehouse's own figures
            assert usage_meta[project]["responses"] == fig["responses"], (project, usage_meta[project])
            assert usage_meta[project]["input_tokens"] == fig["input"], (project, usage_meta[project])
            assert usage_meta[project]["cost_usd"] > 0, (project, usage_meta[project])
            assert archive_meta[project]["versions_extracted"] == fig["files"], (project, archive_meta[project])
            # two records (prompt, answer text) per response at least; the exact count is the memory tests' job
            assert memory_meta[project]["records_extracted"] >= fig["responses"], (project, memory_meta[project])

        # 2. a backfill over every partition, through GraphQL: one run, success
        before_backfill = {r["runId"] for r in live.runs()}
        backfill_id = live.launch_backfill(all_partitions=True, title="e2e: all partitions")
        backfill = live.wait_for_backfill(backfill_id, timeout_sec=RUN_WAIT_SEC)
        assert len(backfill["runIds"]) == 1, f"single-run backfill policy: {backfill}"
        (backfill_run,) = [r for r in live.runs() if r["runId"] == backfill["runIds"][0]]
        assert backfill_run["status"] == "SUCCESS", backfill_run
        report["backfill_run_wall_sec"] = round(backfill_run["endTime"] - backfill_run["startTime"], 1)
        report["backfill_run_job"] = backfill_run["jobName"]
        report["backfill_run_skipped_steps"] = assert_one_step_in_process(live, backfill_run)["skipped"]
        for asset in ALL_ASSETS:
            got = by_partition(live.materializations(asset), backfill_run["runId"])
            assert sorted(got) == sorted(PROJECTS), f"{asset}: partitions materialized by the backfill: {sorted(got)}"
        # nothing changed: each partition keeps what it holds, and the run's zeros are an observation
        for project, meta in by_partition(live.materializations("usage_messages"), backfill_run["runId"]).items():
            assert meta["responses"] == expected[project]["responses"] and "files_processed" not in meta, meta
        for project, meta in by_partition(live.observations("usage_messages"), backfill_run["runId"]).items():
            assert meta["files_processed"] == 0 and meta["files_unchanged"] == expected[project]["files"], meta
        assert not [r for r in live.runs() if r["runId"] not in before_backfill | {backfill_run["runId"]}
                    and r["jobName"] == "ingest_sessions"], "no sensor run while nothing changed"

        # 3. append to 2 projects: one grows an existing session, one gets a new session file
        seen = {r["runId"] for r in live.runs()}
        grown = sessions_dir / CHANGED[0] / "session-0.jsonl"
        before_size = grown.stat().st_size
        extra, extra_totals = session_lines(CHANGED[0], 0, range(50, 53), tag="-appended")
        with grown.open("ab") as f:
            f.write(b"\n".join(extra) + b"\n")
        appended_bytes = grown.stat().st_size - before_size
        new_file = sessions_dir / CHANGED[1] / "session-9.jsonl"
        lines, new_totals = session_lines(CHANGED[1], 9, range(4))
        new_file.write_bytes(b"\n".join(lines) + b"\n")
        changed_at = time.monotonic()
        # a tick may fall between the two writes and split them over two runs (one run per tick is the
        # contract): wait until the runs since the change have ingested both, then look at all of them
        reruns = live.wait(lambda: change_runs(live, seen), RUN_WAIT_SEC,
                           "the sensor run(s) for the 2 changed projects")
        report["change_to_success_sec"] = round(time.monotonic() - changed_at, 1)
        report["change_runs"] = len(reruns)
        report["change_run_wall_sec"] = [round(r["endTime"] - r["startTime"], 1) for r in reruns]
        assert len(reruns) <= 2, reruns
        rerun_ids = {r["runId"] for r in reruns}
        for rerun in reruns:
            assert rerun["tags"].get("dagster/sensor_name") == "session_files_sensor", rerun["tags"]
            assert_one_step_in_process(live, rerun)
        first_start_ms = int(min(r["startTime"] for r in reruns) * 1000)
        for asset in ALL_ASSETS:
            mats = live.materializations(asset)
            got = [m["partition"] for m in mats if m["runId"] in rerun_ids]
            assert sorted(got) == sorted(CHANGED), f"{asset}: partitions materialized by the change run(s): {got}"
            newer = {m["partition"] for m in mats if m["timestamp"] > first_start_ms}
            assert newer == set(CHANGED), f"{asset}: partitions with a materialization since the change: {newer}"
        sessions_meta = by_partition(live.materializations("session_files"), rerun_ids)
        assert (sessions_meta[CHANGED[0]]["files_changed"], sessions_meta[CHANGED[0]]["files_new"]) == (1, 0)
        assert (sessions_meta[CHANGED[1]]["files_changed"], sessions_meta[CHANGED[1]]["files_new"]) == (0, 1)
        for asset in PROCESSOR_ASSETS:
            meta = by_partition(live.materializations(asset), rerun_ids)
            for project, files in ((CHANGED[0], expected[CHANGED[0]]["files"]),
                                   (CHANGED[1], expected[CHANGED[1]]["files"] + 1)):
                assert meta[project]["files_scanned"] == files, (asset, project, meta[project])
                assert meta[project]["files_processed"] == 1, (asset, project, meta[project])
                assert meta[project]["files_unchanged"] == files - 1, (asset, project, meta[project])
        usage = by_partition(live.materializations("usage_messages"), rerun_ids)
        assert usage[CHANGED[0]]["bytes_read"] == appended_bytes, "a grown file is read from where the last run stopped"
        assert usage[CHANGED[1]]["bytes_read"] == new_file.stat().st_size
        assert usage[CHANGED[1]]["responses_extracted"] == new_totals["responses"]
        # what this run extracted, not the grown file's running total: the partitions' numbers add up
        assert usage[CHANGED[0]]["responses_extracted"] == extra_totals["responses"], usage[CHANGED[0]]
        archive = by_partition(live.materializations("session_archive"), rerun_ids)
        assert [archive[p]["versions_extracted"] for p in CHANGED] == [1, 1], archive

        ticks = live.sensor_ticks(limit=200)
        report["sensor_cursor_bytes"] = len(ticks[0]["sensorCursor"] or "")
        durations = sorted(t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"])
        report["tick_sec_median"] = round(durations[len(durations) // 2], 2)
        report["tick_sec_max"] = round(durations[-1], 2)
        starts = sorted(t["timestamp"] for t in ticks)
        gaps = sorted(b - a for a, b in zip(starts, starts[1:], strict=False))
        report["tick_gap_sec_median"] = round(gaps[len(gaps) // 2], 1)
        failed = [t for t in ticks if t["status"] == "FAILURE"]
        assert not failed, f"failed sensor ticks: {failed[:3]}"
        assert report["sensor_cursor_bytes"] < 32, ticks[0]["sensorCursor"]  # "<generation>:<digest>", any size

        # 4. a big new session in KILLED; the sensor's run for it is killed in its step (the step tags the
        # run with its process first), by process group, then the whole `sessionlake dev` goes down
        before_kill = {r["runId"] for r in live.runs()}
        lines, big_totals = session_lines(KILLED, 7, range(1500))
        (sessions_dir / KILLED / "session-7.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        killed = live.wait(lambda: next((r for r in live.runs() if r["runId"] not in before_kill
                                         and r["jobName"] == "ingest_sessions" and PROCESS_TAG in r["tags"]), None),
                           RUN_WAIT_SEC, "the sensor's run for the big session, in its step", poll_sec=0.1)
        worker = int(killed["tags"][PROCESS_TAG].split(":")[0])
        group = os.getpgid(worker)
        if group == live.proc.pid:  # the worker shares `sessionlake dev`'s group: the worker alone, then the rest
            os.kill(worker, signal.SIGKILL)
        else:
            os.killpg(group, signal.SIGKILL)
        assert len(marked_pids(marker)) > 0
    assert not marked_pids(marker), "every process the harness started is gone"

    # 5. `dagster dev -w workspace.yaml` from the repo root loads the same location on the same instance:
    # the sensor resumes from its stored cursor (no second cold run), with the tick history of the first.
    # The killed run is marked failed (its process is gone) and the sensor's next run finishes KILLED:
    # a project counts as ingested when its run succeeded, not when the run was asked for.
    with LiveDagster(home=home, sessions_dir=sessions_dir, sensor_interval_sec=5, command="dagster") as live:
        stored = live.sensor_ticks(limit=200)
        assert len(stored) >= len(ticks), "tick history of the location `sessionlake` is shared"
        redo = live.wait(lambda: next((r for r in live.runs() if r["jobName"] == "ingest_sessions"
                                       and r["runId"] not in before_kill | {killed["runId"]}
                                       and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")), None),
                         RUN_WAIT_SEC, "the sensor's run asking again for the killed run's project")
        assert redo["status"] == "SUCCESS" and redo["tags"].get("dagster/sensor_name") == "session_files_sensor", redo
        [after] = [r for r in live.runs() if r["runId"] == killed["runId"]]
        assert after["status"] == "FAILURE", after
        for asset in ALL_ASSETS:  # materialized where the killed run left work, observed where it had done it
            got = [m["partition"] for m in live.materializations(asset) + live.observations(asset)
                   if m["runId"] == redo["runId"]]
            assert got == [KILLED], f"{asset}: partitions the run after the kill covered: {got}"
        last = max(t["timestamp"] for t in live.sensor_ticks(limit=5))
        tick = live.wait(lambda: next((t for t in live.sensor_ticks(limit=5) if t["timestamp"] > last
                                       and t["status"] != "STARTED"), None), RUN_WAIT_SEC, "a sensor tick")
        assert tick["status"] == "SKIPPED" and tick["skipReason"] == f"no changes in {len(PROJECTS)} project(s)", tick
        assert [r["runId"] for r in live.runs() if r["jobName"] == "ingest_sessions" and r["runId"] not in seen
                and r["runId"] not in rerun_ids] == [redo["runId"], killed["runId"]], "one run after the restart"
        marker = live.marker
    assert not marked_pids(marker)

    # the warehouse holds each project's own figures (read-only, after the daemon is gone)
    expected[CHANGED[0]] = {k: v + extra_totals.get(k, 0) for k, v in expected[CHANGED[0]].items()}
    expected[CHANGED[1]] = {k: v + new_totals.get(k, 0) for k, v in expected[CHANGED[1]].items()}
    expected[KILLED] = {k: v + big_totals.get(k, 0) for k, v in expected[KILLED].items()}
    rows = warehouse(home, sessions_dir)
    assert rows == {p: {k: fig[k] for k in ("responses", "input", "output")} for p, fig in expected.items()}
    report["total_sec"] = round(time.monotonic() - started, 1)
    print("live daemon report:", json.dumps(report))
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))

