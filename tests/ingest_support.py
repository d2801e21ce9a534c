"""Running the ingest job as the session sensor asks for it, in process, on a test's own instance."""

import dagster as dg

from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.sessions.assets import JOB_NAME
from pipelines.defs.sessions.sensors import partition_run_request


def run_ingest(instance: dg.DagsterInstance, projects: list[str]) -> dg.ExecuteInProcessResult:
    """One ingest_sessions run over ``projects`` (registered partitions), requested as the sensor requests it."""
    order = instance.get_dynamic_partitions(projects_partitions.name)
    request = partition_run_request(order, projects)
    tags = dict(request.tags)
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    return defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance, tags=tags,
                                                            run_config=request.run_config)
