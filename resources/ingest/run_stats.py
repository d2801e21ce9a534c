"""The numbers an ingest counts per processor: run totals, the files that failed, and the same per project
(``stats["by_project"]``). The runner, the team ingest and ``memory rebuild`` fill them alike."""

from __future__ import annotations

MAX_ERRORS_REPORTED = 20
"""Failures described per run and per project (all are counted and retried)."""

COUNTS = ("scanned", "processed", "skipped", "errors", "items_extracted", "lines_malformed", "bytes_read", "vanished")
"""The numbers the runner counts per processor, for the whole run and for each project."""


def empty_stats() -> dict:
    """Run totals (`COUNTS`), the failures, and ``by_project``: the same counts and failures per project."""
    return {**dict.fromkeys(COUNTS, 0), "error_files": [], "failed_files": [], "by_project": {}}


def project_stats(stats: dict, project: str) -> dict:
    """``project``'s counters inside ``stats``, made on first use."""
    per = stats["by_project"].get(project)
    if per is None:
        per = stats["by_project"][project] = {**dict.fromkeys(COUNTS, 0), "error_files": [], "failed_files": []}
    return per


def count_stat(stats: dict, project: str, key: str, n: int = 1) -> None:
    """Add ``n`` to counter ``key`` in the run totals and in ``project``'s."""
    stats[key] += n
    project_stats(stats, project)[key] += n


def report_error(stats: dict, project: str, key: str, exc: BaseException, prefix: str = "") -> None:
    """Count and describe the failure of file ``key``, in the run totals and in its project's."""
    count_stat(stats, project, "errors")
    error = {"file": key, "error": f"{prefix}{type(exc).__name__}: {exc}"}
    for bucket in (stats, project_stats(stats, project)):
        bucket["failed_files"].append(key)
        if len(bucket["error_files"]) < MAX_ERRORS_REPORTED:
            bucket["error_files"].append(error)
