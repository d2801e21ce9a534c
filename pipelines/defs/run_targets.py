"""What a run writes, judged by the assets it targets rather than by tags, so runs launched any way
(sensor, CLI, a UI materialization or backfill, GraphQL) are seen alike."""

from __future__ import annotations

from collections.abc import Collection

import dagster as dg


def targets_any(run: dg.DagsterRun, repository: dg.RepositoryDefinition | None, assets: Collection[str]) -> bool:
    """Whether ``run`` targets one of ``assets``: by its asset selection, or else (no selection, or an
    empty one, as a run that `sessionlake ingest` executes in process stores) by every asset of its job
    (looked up in ``repository``). A job we cannot look up counts as targeting them, to be safe."""
    if run.asset_selection:
        keys = {k.to_user_string() for k in run.asset_selection}
    elif repository is not None and repository.has_job(run.job_name):
        keys = {k.to_user_string() for k in repository.get_job(run.job_name).asset_layer.executable_asset_keys}
    else:
        return True
    return not keys.isdisjoint(assets)
