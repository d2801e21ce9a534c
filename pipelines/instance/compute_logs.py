"""What a run started by ``sessionlake ingest`` prints, captured without Dagster's mirror processes.

Dagster's `LocalComputeLogManager` captures a run's stdout and stderr into files (the UI's stdout/stderr
of the run) and mirrors each file live to the terminal through a ``tail -F`` process, watched by a second
Python interpreter that kills the tail if the run's process dies: four processes per run, two of them
Python start-ups (about 0.1 s of CPU), started when the step starts and stopped, each waited for, when it ends.

`captured_at_end(instance)` gives an instance that uses Dagster's local manager (`dagster.yaml` with no
other ``compute_logs``) an `AtEndComputeLogManager` for the duration: the same files in the same place
(the UI shows them the same), written the same way (file descriptors 1 and 2 redirected to them), and what
they got copied to the streams they replaced when the capture ends, in this process. The CLI uses it when
the run's output is held back from the terminal anyway (`pipelines.cli.run_log.held_back`, without
``--debug``), so nothing is seen later than before; with ``--debug`` the run mirrors live as Dagster does.

It stands on names of Dagster's that are not its public API, listed in `DAGSTER_INTERNALS` and checked by
tests/test_compute_logs.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence

from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._utils import ensure_file, touch_file

DAGSTER_INTERNALS = {
    "dagster._core.execution.compute_logs": ("redirect_to_file",),
    "dagster._core.storage.compute_log_manager": ("CapturedLogContext", "ComputeIOType"),
    "dagster._core.storage.local_compute_log_manager": ("IO_TYPE_EXTENSION", "LocalComputeLogManager"),
    "dagster._utils": ("ensure_file", "touch_file"),
    "LocalComputeLogManager": ("capture_logs", "get_captured_local_path", "complete_artifact_path", "inst_data"),
    "DagsterInstance instance": ("_compute_log_manager",),
}
"""Every name outside Dagster's public API this module relies on, by where it lives."""


class AtEndComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute log manager, whose capture copies the captured output to the replaced
    streams when it ends instead of mirroring it live through ``tail`` processes."""

    @contextlib.contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with _copied_at_end(sys.stdout, outpath), _copied_at_end(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # as Dagster's: the capture is complete


@contextlib.contextmanager
def _copied_at_end(stream, path: str) -> Iterator[None]:
    ensure_file(path)
    start = os.path.getsize(path)
    try:
        with redirect_to_file(stream, path):
            yield
    finally:
        with contextlib.suppress(OSError, ValueError), open(path, encoding="utf8", errors="replace") as captured:
            captured.seek(start)
            shutil.copyfileobj(captured, stream)
            stream.flush()


@contextlib.contextmanager
def captured_at_end(instance) -> Iterator[None]:
    """``instance`` captures runs' output with `AtEndComputeLogManager` while the block runs, when it is
    configured with Dagster's `LocalComputeLogManager` (any other manager is left as it is)."""
    manager = instance.compute_log_manager
    if type(manager) is not LocalComputeLogManager or manager.inst_data is None:
        yield
        return
    at_end = AtEndComputeLogManager(inst_data=manager.inst_data, **manager.inst_data.config_dict)
    at_end.register_instance(instance)
    instance._compute_log_manager = at_end
    try:
        yield
    finally:
        instance._compute_log_manager = manager
        at_end.dispose()
