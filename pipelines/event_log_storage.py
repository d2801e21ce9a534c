"""The module name that a ``dagster.yaml`` copied into a home before sessionlake 0.2 gives its event log.

Dagster imports the module an instance's ``event_log_storage`` names, so this name stays importable;
the class lives in `pipelines.instance.event_log_storage`.
"""

from pipelines.instance.event_log_storage import PooledSqliteEventLogStorage

__all__ = ["PooledSqliteEventLogStorage"]
