"""Where a fresh ``sessionlake recall`` spends its time, phase by phase (`bench.startup` runs it).

``python -m bench.recall_phases CUE`` is a new process that takes the steps of the command in its
order, with the library calls the command makes, and prints ``{phase: [wall_ms, cpu_ms]}`` as JSON:
imports (pylance and pyarrow, then sessionlake's modules), settings, the lost-table check, opening
the store, the query (the hits' provenance is queued), formatting the hits, and the wait for the
provenance write at the end. The last phase, ``ledger read from the warehouse``, is not on the
command's path when every table folder is there: it is what the lost-table check costs when one is
missing (importing duckdb and reading ``lance_tables``), and what every recall paid before the check
learned to skip it.
"""

from __future__ import annotations

import json
import sys
import time

_marks: list[tuple[str, float, float]] = [("start", time.perf_counter(), time.process_time())]


def _mark(phase: str) -> None:
    _marks.append((phase, time.perf_counter(), time.process_time()))


def phases(cue: str) -> dict[str, list[float]]:
    import lance  # noqa: F401  (what the command's first Lance read imports)

    _mark("import pyarrow and pylance")
    from pipelines.cli.recall import SNIPPET_WIDTH
    from resources.config.settings import Settings
    from resources.memory.hits import ALL_FIELDS, describe
    from resources.memory.lance import LanceStore
    from resources.memory.recall import recall
    from resources.memory.table_ledger import ledger_for, lost_tables_line

    _mark("import sessionlake modules")
    settings = Settings.from_env()
    _mark("settings")
    if lost_tables_line(settings):
        raise SystemExit("a Lance table is lost: nothing to measure")
    _mark("lost-table check")
    store = LanceStore.from_settings(settings)
    store.enable_provenance_queue(coalesce_ms=0)
    _mark("open the store")
    hits = recall(store, cue, "bench", k=10)
    _mark("query")
    [describe(hit, i, cue, SNIPPET_WIDTH, ("**", "**"), ALL_FIELDS) for i, hit in enumerate(hits, 1)]
    _mark("format the hits")
    store.disable_provenance_queue()
    _mark("wait for the provenance write")
    ledger_for(settings).known()
    _mark("ledger read from the warehouse")
    return {phase: [round((t - t0) * 1000, 1), round((c - c0) * 1000, 1)]
            for (_, t0, c0), (phase, t, c) in zip(_marks, _marks[1:], strict=False)}


if __name__ == "__main__":
    print(json.dumps(phases(sys.argv[1])))
