"""The floor of any command that starts one Dagster run: ``python -m bench.dagster_floor``.

In a fresh process, as ``sessionlake ingest`` does: import dagster, open the instance at
DAGSTER_HOME, and materialize one asset that does nothing, in process. Prints the phases as JSON
(seconds). Whatever a run does, a CLI built on one Dagster run cannot finish sooner than this
process on the same machine.
"""

from __future__ import annotations

import json
import time

if __name__ == "__main__":
    started = time.perf_counter()
    import dagster as dg

    imported = time.perf_counter()

    @dg.asset
    def noop() -> None:
        """Does nothing: the run costs only what Dagster itself costs."""

    with dg.DagsterInstance.get() as instance:
        opened = time.perf_counter()
        dg.materialize([noop], instance=instance, raise_on_error=True,
                       run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        ran = time.perf_counter()
    print(json.dumps({"import_sec": imported - started, "instance_sec": opened - imported, "run_sec": ran - opened}))
