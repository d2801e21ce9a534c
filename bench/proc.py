"""Run a command as a child process and measure it: wall time and the peak RSS of its process tree.

The tree's RSS is the sum over the child and its descendants, polled from /proc in a thread; ``ru_maxrss``
from ``wait4`` (the largest single process, in the kernel's own accounting) is reported beside it, so a
peak between two polls is not missed. The wall time ends when the blocking ``wait4`` returns, not at the
next poll (polling quantized it to 50 ms steps, which a 0.1 s command cannot afford).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POLL_SEC = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    elapsed_sec: float
    peak_tree_rss: int
    """bytes: the largest sum of RSS over the process tree seen while polling."""
    max_rss: int
    """bytes: the largest RSS of one process of the tree (``wait4``'s ru_maxrss)."""
    cpu_sec: float
    """user + system CPU seconds of the tree: unlike wall time, barely moved by other load on the machine."""
    returncode: int
    stdout: str
    stderr: str


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/children", "rb") as f:
                kids.extend(int(k) for k in f.read().split())
    except OSError:
        pass
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and every descendant right now."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss(pid)
        todo.extend(_children(pid))
    return total


def run_measured(args: list[str], env: dict[str, str], poll_sec: float = POLL_SEC) -> Measured:
    """Run ``args`` to completion; output is collected in temp files so polling never blocks on a pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(poll_sec)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(elapsed, peak[0], usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, proc.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def python_env(home: Path, sessions: Path, **extra: str) -> dict[str, str]:
    """The environment of a sessionlake process on a fresh data home and Dagster home under ``home``."""
    return {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(sessions),
            "DAGSTER_HOME": str(home / "dagster"), **extra}
