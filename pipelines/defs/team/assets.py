"""The team_sessions asset: the central ingest of the packs machines pushed to the team bucket."""

import dagster as dg

from pipelines.defs.resources import LanceResource, PackResource, TeamResource
from pipelines.defs.sessions.assets import USAGE_TOTALS
from pipelines.defs.sessions.holdings import usage_totals
from pipelines.defs.tags import POOL_INGEST

LOOKBACK_SEC = 3600

MAX_MANIFESTS_PER_RUN = 200

MANIFESTS_TAG = "sessionlake/manifests"

CHECK = "team_packs_ingested"

_WHAT = ("manifest", "pack", "version", "file")
"""What a failure names: a manifest, a pack, a session version in one, or a sync file."""


class TeamIngestConfig(dg.Config):
    manifests: list[str] = []
    """Manifest names to ingest; empty: every manifest in the bucket not ingested yet."""


@dg.asset(pool=POOL_INGEST, group_name="team", kinds={"duckdb", "lancedb", "s3"},
          check_specs=[dg.AssetCheckSpec(CHECK, asset="team_sessions",
                                         description="Every manifest and pack of the run was read and ingested.")])
def team_sessions(context: dg.AssetExecutionContext, config: TeamIngestConfig, team: TeamResource,
                  packs: PackResource, lance: LanceResource) -> dg.MaterializeResult:
    """Usage rows and memory records of the sessions that machines pushed to the team bucket, each
    usage row attributed to its user and machine; the pushed packs join this deployment's archive. The
    usage files machines sync there (``sessionlake sync`` with SESSIONLAKE_SYNC_URI set to the team
    bucket: usage only, no transcripts) are read too, each response counted once across both."""
    from resources.ingest.processors.memory import MemoryProcessor
    from resources.ingest.processors.usage import UsageProcessor
    from resources.sync.run import pull
    from resources.team.ingest import ingest_manifests, new_manifests
    from resources.team.manifests import ManifestError, list_manifest_names, read_manifest
    from resources.usage.pricing import PriceTable

    settings = team.settings()
    if settings.team is None or settings.storage_uri != settings.team_uri:
        raise dg.Failure("a team ingest needs SESSIONLAKE_TEAM_URI, and SESSIONLAKE_STORAGE_URI set to the same "
                         f"URI (the pushed packs are read in place); got {settings.team_uri!r} and "
                         f"{settings.storage_uri!r}")
    bucket = settings.team.blobs()
    names = config.manifests or list(list_manifest_names(bucket))
    store = packs.store()
    manifests, unreadable = [], []
    for name in names:
        try:
            manifests.append(read_manifest(bucket, name))
        except (ManifestError, FileNotFoundError) as exc:
            unreadable.append({"manifest": name, "error": str(exc)})
    manifests = new_manifests(store, manifests)
    prices = PriceTable.load(settings.price_file)
    processors = [UsageProcessor(prices), MemoryProcessor(lance.store())]
    result = ingest_manifests(manifests, processors, store, context.log)
    synced = pull(store.state, bucket, prices, context.log.info)
    t, usage, memory = result["team"], result["usage"], result["memory"]
    failures = unreadable + t["failed_packs"] + [
        {"version": e["file"], "error": e["error"]} for s in (usage, memory) for e in s["error_files"]] + [
        {"file": error.split(": ", 1)[0], "error": error} for error in synced["errors"]]
    context.log.info(f"{t['manifests']} manifests, {t['packs']} packs ({t['packs_skipped']} already ingested), "
                     f"{t['versions']} session versions")
    by_origin: dict[tuple[str, str], int] = {}
    for m in manifests:
        by_origin[(m.user, m.machine)] = by_origin.get((m.user, m.machine), 0) + len(m.packs)
    if usage["processed"]:
        with store.state.connect() as conn:
            context.log_event(dg.AssetMaterialization(USAGE_TOTALS, metadata=usage_totals(conn)))
    table = "| user | machine | packs named |\n|---|---|---|\n" + "".join(
        f"| {u} | {h} | {n} |\n" for (u, h), n in sorted(by_origin.items()))
    return dg.MaterializeResult(
        metadata={
            "manifests_ingested": dg.MetadataValue.int(t["manifests"]),
            "packs_ingested": dg.MetadataValue.int(t["packs"]),
            "packs_already_ingested": dg.MetadataValue.int(t["packs_skipped"]),
            "versions_read": dg.MetadataValue.int(t["versions"]),
            "pack_bytes_read": dg.MetadataValue.int(t["pack_bytes"]),
            "responses_extracted": dg.MetadataValue.int(usage["items_extracted"]),
            "records_extracted": dg.MetadataValue.int(memory["items_extracted"]),
            "sync_files_read": dg.MetadataValue.int(synced["pulled_files"]),
            "sync_responses_read": dg.MetadataValue.int(synced["pulled_rows"]),
            "failures": dg.MetadataValue.int(len(failures)),
            "by_origin": dg.MetadataValue.md(table),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK, passed=not failures, severity=dg.AssetCheckSeverity.ERROR,
            description=("all read" if not failures else
                         "| what | error |\n|---|---|\n" + "".join(
                             f"| {next(f[k] for k in _WHAT if k in f)} | {f['error'][:200]} |\n"
                             for f in failures[:20])),
            metadata={"failures": dg.MetadataValue.int(len(failures))},
        )],
    )
