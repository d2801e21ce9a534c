"""The consolidated_packs asset (pack GC per project) and its archive_verified check."""

import dagster as dg

from pipelines.defs.partitions import ProjectsConfig, projects_partitions, selected_projects
from pipelines.defs.resources import PackResource
from pipelines.defs.tags import POOL_INGEST
from resources.archive.pack_format import FORMAT_VERSION as PACK_FORMAT_VERSION

VERIFIED_CHECK = "archive_verified"

_COUNTS = ("live_packs", "pack_bytes", "objects", "object_bytes", "stored_bytes", "versions", "version_bytes")


def _ratio(num: int, den: int) -> float:
    return round(num / den, 3) if den else 1.0


def _totals(stats: list[dict]) -> dict:
    total = {k: sum(s[k] for s in stats) for k in _COUNTS}
    total["dedup_ratio"] = _ratio(total["version_bytes"], total["object_bytes"])
    total["compression_ratio"] = _ratio(total["object_bytes"], total["stored_bytes"])
    return total


def _problems_md(problems: list[dict]) -> str:
    return "| repo | pack | problem |\n|---|---|---|\n" + "\n".join(
        f"| {p['repo']} | `{p['pack']}` | {p['problem']} |" for p in problems[:50]
    )


STEP_NAME = "consolidated_packs"


def _gc_metadata(before: dict, after: dict, result: dict) -> dict[str, dg.MetadataValue]:
    metadata = {
        "packs_before": dg.MetadataValue.int(before["live_packs"]),
        "packs_after": dg.MetadataValue.int(after["live_packs"]),
        "pack_bytes_before": dg.MetadataValue.int(before["pack_bytes"]),
        "pack_bytes_after": dg.MetadataValue.int(after["pack_bytes"]),
        "objects": dg.MetadataValue.int(after["objects"]),
        "sessions": dg.MetadataValue.int(after["sessions"]),
        "versions": dg.MetadataValue.int(after["versions"]),
        "version_bytes": dg.MetadataValue.int(after["version_bytes"]),
        "dedup_ratio": dg.MetadataValue.float(after["dedup_ratio"]),
        "compression_ratio": dg.MetadataValue.float(after["compression_ratio"]),
        "consolidated": dg.MetadataValue.bool(not result["skipped"]),
        "dagster/row_count": dg.MetadataValue.int(after["live_packs"]),
    }
    if result["consolidated_key"]:
        metadata["consolidated_key"] = dg.MetadataValue.text(result["consolidated_key"])
    return metadata


@dg.multi_asset(
    name=STEP_NAME,
    specs=[dg.AssetSpec("consolidated_packs", deps=[dg.AssetKey("session_archive")], group_name="archive",
                        kinds={"msgpack"}, skippable=True, code_version=f"pack-format-{PACK_FORMAT_VERSION}",
                        description="One live pack per project: pack GC consolidates a project's packs and sweeps "
                                    "tombstones past the grace period. Each partition carries its project's packs, "
                                    "bytes, versions and ratios after the run.")],
    check_specs=[dg.AssetCheckSpec(VERIFIED_CHECK, asset="consolidated_packs",
                                   description="Every index row resolves and no pack fails its hash.")],
    partitions_def=projects_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=POOL_INGEST,
)
def consolidated_packs(context: dg.AssetExecutionContext, config: ProjectsConfig, packs: PackResource):
    """GC each project of the run (one already holding at most one live pack is left as it is, and still
    materialized: it is consolidated), sweep what is past grace, verify, and materialize each project with
    its own numbers; the run's totals go to the log."""
    store = packs.store()
    repos = selected_projects(context, config)
    before = store.repos_stats(repos)
    results = {r: store.gc_repo(r) for r in repos}
    swept = store.sweep()
    after = store.repos_stats(repos)
    for repo, r in results.items():
        context.log.info(f"pack GC {repo}: {r['packs_before']} -> {r['packs_after']} live packs"
                         + (" (skipped)" if r["skipped"] else f", consolidated into {r['consolidated_key']}"))
        yield dg.AssetMaterialization("consolidated_packs", partition=repo,
                                      metadata=_gc_metadata(before[repo], after[repo], r))
    b, a = _totals(list(before.values())), _totals(list(after.values()))
    context.log.info(f"pack GC: {b['live_packs']} -> {a['live_packs']} live packs in {len(repos)} project(s), "
                     f"{swept['tombstoned_deleted'] + swept['orphans_deleted']} pack(s) swept, "
                     f"{swept['bytes_freed']:,} bytes freed")
    report = store.verify(repos)
    yield dg.AssetCheckResult(
        asset_key="consolidated_packs",
        check_name=VERIFIED_CHECK,
        passed=report["ok"],
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "packs_checked": dg.MetadataValue.int(report["packs_checked"]),
            "bytes_checked": dg.MetadataValue.int(report["bytes_checked"]),
            "index_rows": dg.MetadataValue.int(report["index_rows"]),
            "problems": dg.MetadataValue.int(len(report["problems"])),
            **({"details": dg.MetadataValue.md(_problems_md(report["problems"]))} if report["problems"] else {}),
        },
    )
