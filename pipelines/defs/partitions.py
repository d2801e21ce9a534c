"""Partitions shared by the session and archive assets: one dynamic partition per project, and the one run
request that covers any set of them."""

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

projects_partitions = dg.DynamicPartitionsDefinition(name="projects")


class ProjectsConfig(dg.Config):
    projects: list[str] = []
    """Only these projects of the run's partitions (the change set a sensor asked for); empty: all of them."""


def projects_run_request(step: str, order: list[str], projects: list[str], run_key: str | None = None,
                         tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One run request for ``projects`` (any subset of the partitions, in any order): one partition, or the
    range spanning them in the instance's partition ``order`` with the exact set in ``step``'s config
    (a `ProjectsConfig`)."""
    position = {p: i for i, p in enumerate(order)}
    wanted = sorted(projects, key=position.__getitem__)
    config = dg.RunConfig(ops={step: ProjectsConfig(projects=wanted)})
    if len(wanted) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=wanted[0], run_config=config, tags=tags or {})
    range_tags = {ASSET_PARTITION_RANGE_START_TAG: wanted[0], ASSET_PARTITION_RANGE_END_TAG: wanted[-1]}
    return dg.RunRequest(run_key=run_key, run_config=config, tags={**(tags or {}), **range_tags})


def selected_projects(context: dg.AssetExecutionContext, config: ProjectsConfig) -> list[str]:
    """The run's partitions, narrowed to ``config.projects`` when the request named them."""
    in_run = list(context.partition_keys)
    if not config.projects:
        return in_run
    wanted = set(config.projects)
    if len(wanted - set(in_run)):
        context.log.warning(f"projects not in this run's partitions, ignored: {sorted(wanted - set(in_run))}")
    return [p for p in in_run if p in wanted]
