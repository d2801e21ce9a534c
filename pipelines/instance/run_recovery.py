"""Dead runs never wedge the pools: each run records the process that executes it, and a run whose
process is gone is marked failed and its pool slots freed before anyone waits for a slot.

Dagster's default run launcher cannot tell that a run worker died, and an in-process run (the CLI)
that was SIGKILLed leaves its run STARTED and its pool slot claimed forever; every later run then
waits for that slot. So the ingest step tags its run with the host and the process (pid and the
process's start time, so a reused pid is not mistaken for the dead one), and `reap_dead_runs` runs
before a wait for a slot (`wait_for_pool`) and on every session-sensor tick.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import dagster as dg

from pipelines.instance.home import PoolWaitTimeout

HOST_TAG = "sessionlake/host"
PROCESS_TAG = "sessionlake/process"
"""``<pid>:<start time>`` of the process executing the run's steps."""

ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


def process_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def process_alive(tag: str) -> bool:
    """Whether the process named by a `PROCESS_TAG` value still runs (the same process, not a reuse of its pid)."""
    pid_text, _, started = tag.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not started or _start_time(pid) in ("", started)


def process_tags() -> dict[str, str]:
    """The host and process tags of a run executed by this process."""
    return {HOST_TAG: socket.gethostname(), PROCESS_TAG: process_tag()}


def claim_run(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag ``run_id`` with this host and process, so a later process can tell if it died.

    A run launched elsewhere (the daemon's run worker) is tagged by its step, which leaves a short
    window after the step's pool slot is claimed; Dagster's run monitoring covers that one. A run this
    process executes itself (`sessionlake ingest`) carries `process_tags` from its creation instead.
    """
    instance.add_run_tags(run_id, process_tags())


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every active run whose recorded process on this host is gone as failed, and free its pool
    slots; free the slots still held by runs that ended and whose process on this host is gone (see
    `_free_slots_of_ended_runs`). Returns the run ids marked failed."""
    reaped = []
    host = socket.gethostname()
    runs = instance.get_runs(dg.RunsFilter(statuses=ACTIVE, tags={HOST_TAG: host}))
    for run in runs:
        if not _process_gone(run, host):
            continue
        pid = run.tags[PROCESS_TAG].split(":")[0]
        instance.report_run_failed(run, message=f"sessionlake: the process that ran this run (pid {pid} on "
                                                f"{run.tags[HOST_TAG]}) is gone; marked failed, pool slots freed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    _free_slots_of_ended_runs(instance, host)
    return reaped


def _free_slots_of_ended_runs(instance: dg.DagsterInstance, host: str) -> None:
    """Free the pool slots (claimed or pending) of every run that ended while holding them and whose recorded
    process on ``host`` is gone. Dagster's run monitoring fails a run whose worker died without freeing its
    slots, and frees them only ``free_slots_after_run_end_seconds`` (60 s) after the run's end, in case a step
    process of it still runs; a run of ours records the process that runs its steps, so once that is gone the
    slots are freed at once, and the next run does not wait a minute after a crash."""
    storage = instance.event_log_storage
    holders: set[str] = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        holders |= info.active_run_ids | info.pending_run_ids
    for run in instance.get_runs(dg.RunsFilter(run_ids=sorted(holders))) if holders else ():
        if run.is_finished and _process_gone(run, host):
            storage.free_concurrency_slots_for_run(run.run_id)


def _process_gone(run: dg.DagsterRun, host: str) -> bool:
    """Whether ``run`` recorded the process that runs it on ``host``, and that process is gone."""
    tag = run.tags.get(PROCESS_TAG)
    return run.tags.get(HOST_TAG) == host and bool(tag) and not process_alive(tag)


def slot_holders(instance: dg.DagsterInstance, pool: str) -> list[dg.DagsterRun] | None:
    """The runs holding every slot of ``pool``, or None when a slot is free (or the pool has no limit)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    limit = info.slot_count if info.slot_count else info.limit
    if not limit or info.active_slot_count < limit:
        return None
    runs = [instance.get_run_by_id(run_id) for run_id in sorted(info.active_run_ids)]
    return [r for r in runs if r is not None]


def wait_for_pool(
    instance: dg.DagsterInstance,
    pool: str,
    timeout_sec: float,
    say: Callable[[str], None],
    poll_sec: float = 1.0,
) -> None:
    """Return once ``pool`` has a free slot, after reaping dead runs; say which run is waited for.

    Sleeps between polls (no busy wait), so Ctrl-C and SIGTERM (as the caller maps it) interrupt it.
    Raises `PoolWaitTimeout` after ``timeout_sec``.
    """
    deadline = time.monotonic() + timeout_sec
    announced: set[str] = set()
    while True:
        reap_dead_runs(instance)
        holders = slot_holders(instance, pool)
        if holders is None:
            return
        names = ", ".join(f"{r.job_name} {r.run_id} ({r.status.value})" for r in holders) or "an unknown run"
        if names not in announced:
            say(f"waiting for pool {pool}: held by {names}")
            announced.add(names)
        if time.monotonic() >= deadline:
            raise PoolWaitTimeout(
                f"gave up after {timeout_sec:.0f}s waiting for pool {pool}, held by {names}; "
                "let it finish, or cancel it in the Dagster UI"
            )
        time.sleep(poll_sec)
