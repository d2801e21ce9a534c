"""The consolidated_packs asset (pack GC per project) and its archive_verified check."""

import dagster as dg

from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import PackResource
from pipelines.defs.tags import POOL_INGEST

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


@dg.asset(
    partitions_def=projects_partitions,
    deps=[dg.AssetKey("session_archive")],
    pool=POOL_INGEST,
    group_name="archive",
    check_specs=[dg.AssetCheckSpec(VERIFIED_CHECK, asset="consolidated_packs",
                                   description="Every index row resolves and no pack fails its hash.")],
)
def consolidated_packs(context: dg.AssetExecutionContext, packs: PackResource):
    """One live pack per project: GC consolidates the project's packs, then sweeps what is past grace.

    Metadata: packs, bytes and objects before and after, the dedup ratio (bytes of every archived
    version / bytes of unique objects), the compression ratio (object bytes / stored bytes), and
    projects_skipped (projects that already had at most one live pack).
    """
    store = packs.store()
    repos = sorted(context.partition_keys)
    before = [store.repo_stats(r) for r in repos]
    results = [store.gc_repo(r) for r in repos]
    swept = store.sweep()
    after_stats = [store.repo_stats(r) for r in repos]
    b, a = _totals(before), _totals(after_stats)
    for r in results:
        context.log.info(f"pack GC {r['repo']}: {r['packs_before']} -> {r['packs_after']} live packs"
                         + (" (skipped)" if r["skipped"] else f", consolidated into {r['consolidated_key']}"))
    metadata = {
        "packs_before": dg.MetadataValue.int(b["live_packs"]),
        "packs_after": dg.MetadataValue.int(a["live_packs"]),
        "bytes_before": dg.MetadataValue.int(b["pack_bytes"]),
        "bytes_after": dg.MetadataValue.int(a["pack_bytes"]),
        "objects_before": dg.MetadataValue.int(b["objects"]),
        "objects_after": dg.MetadataValue.int(a["objects"]),
        "versions": dg.MetadataValue.int(a["versions"]),
        "dedup_ratio": dg.MetadataValue.float(a["dedup_ratio"]),
        "compression_ratio": dg.MetadataValue.float(a["compression_ratio"]),
        "projects_skipped": dg.MetadataValue.int(sum(r["skipped"] for r in results)),
        "packs_swept": dg.MetadataValue.int(swept["tombstoned_deleted"] + swept["orphans_deleted"]),
        "bytes_freed": dg.MetadataValue.int(swept["bytes_freed"]),
    }
    if len(results) == 1 and results[0]["consolidated_key"]:
        metadata["consolidated_key"] = dg.MetadataValue.text(results[0]["consolidated_key"])
    report = store.verify(repos)
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
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
