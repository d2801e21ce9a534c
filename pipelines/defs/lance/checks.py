"""The Lance storage checks, on lance_storage: per group of tables (the memory's records, edges and provenance;
the events table), versions, small fragments, rows preserved by the last optimize, and every table readable.

They are table-wide, so they belong to the maintenance asset: a backfill of the session assets never plans
them (they would only be skipped there), and the maintenance job runs them after each optimize."""

import dagster as dg

from pipelines.defs.lance.assets import ERROR_FACTOR, lance_storage
from pipelines.defs.resources import LanceResource
from resources.memory import maintenance as lm
from resources.memory.events import query_events
from resources.memory.schema import EDGES, EVENTS, PROVENANCE, RECORDS


def _threshold_result(counts: dict[str, int], threshold: int, what: str) -> dg.AssetCheckResult:
    worst = max(counts.values(), default=0)
    severity = dg.AssetCheckSeverity.ERROR if worst >= ERROR_FACTOR * threshold else dg.AssetCheckSeverity.WARN
    over = [f"{t}: {n:,} {what} > {threshold:,}" for t, n in counts.items() if n > threshold]
    return dg.AssetCheckResult(
        passed=not over, severity=severity,
        description="; ".join(over) + " (run lance_maintenance)" if over else f"every table <= {threshold} {what}",
        metadata={**{f"{t}_{what.replace(' ', '_')}": dg.MetadataValue.int(n) for t, n in counts.items()},
                  "threshold": dg.MetadataValue.int(threshold)},
    )


def _rows_result(store, tables: tuple[str, ...]) -> dg.AssetCheckResult:
    events = query_events(store, kind=lm.OPTIMIZED_EVENT, limit=1)
    if not events:
        return dg.AssetCheckResult(passed=True, description="no optimize has run yet")
    per_table = events[0]["data"].get("per_table", {})
    lost, unverified, metadata = [], [], {}
    for table in tables:
        entry = per_table.get(table, {})
        before, after = entry.get("rows_before"), entry.get("rows_after")
        if before is None or after is None:
            unverified.append(f"{table}: {entry.get('error', 'not in the report')}")
            continue
        metadata[f"{table}_rows_before"] = dg.MetadataValue.int(before)
        metadata[f"{table}_rows_after"] = dg.MetadataValue.int(after)
        if after < before:
            lost.append(f"{table}: {before - after:,} row(s) fewer after optimize ({before:,} -> {after:,})")
        elif after > before:
            unverified.append(f"{table}: {after - before:,} row(s) committed by a writer during optimize")
    metadata["optimize_event_ts"] = dg.MetadataValue.text(str(events[0]["ts"]))
    if lost:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description="; ".join(lost + unverified), metadata=metadata)
    if unverified:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="cannot compare: " + "; ".join(unverified), metadata=metadata)
    return dg.AssetCheckResult(passed=True, description="rows unchanged across the last optimize", metadata=metadata)


def _unreadable_result(store, tables: tuple[str, ...]) -> dg.AssetCheckResult | None:
    """An ERROR result naming every table of ``tables`` that exists but cannot be opened, else None."""
    broken = store.unreadable_tables(tables)
    if not broken:
        return None
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                               description="; ".join(str(exc) for exc in broken.values()),
                               metadata={"unreadable_tables": dg.MetadataValue.text(", ".join(broken))})


def storage_checks(group: str, tables: tuple[str, ...]) -> list[dg.AssetChecksDefinition]:
    """The four storage-health checks of one group of Lance tables, named ``<group>_<check>``."""
    label = ", ".join(tables)

    @dg.asset_check(asset=lance_storage, name=f"{group}_versions",
                    description=f"Versions on disk of {label} at or below lance_versions_threshold "
                                f"(WARN above, ERROR at {ERROR_FACTOR}x).")
    def versions_check(lance: LanceResource) -> dg.AssetCheckResult:
        store = lance.store()
        counts = {t: lm.count_versions(store, t) for t in tables}
        return _threshold_result(counts, lance.settings().lance_versions_threshold, "versions")

    @dg.asset_check(asset=lance_storage, name=f"{group}_small_fragments",
                    description=f"Small fragments of {label} at or below lance_small_fragments_threshold "
                                f"(WARN above, ERROR at {ERROR_FACTOR}x).")
    def small_fragments_check(lance: LanceResource) -> dg.AssetCheckResult:
        store = lance.store()
        unreadable = _unreadable_result(store, tables)
        if unreadable is not None:
            return unreadable
        counts = {t: lm.measure_table(store, t).small_fragments for t in tables}
        return _threshold_result(counts, lance.settings().lance_small_fragments_threshold, "small fragments")

    @dg.asset_check(asset=lance_storage, name=f"{group}_rows_preserved_by_optimize",
                    description=f"Row counts of {label} unchanged across the last optimize "
                                "(ERROR if rows were lost, WARN if a writer made them incomparable).")
    def rows_check(lance: LanceResource) -> dg.AssetCheckResult:
        return _rows_result(lance.store(), tables)

    @dg.asset_check(asset=lance_storage, name=f"{group}_tables_readable",
                    description=f"Every table of {label} opens (ERROR when a folder exists that Lance cannot "
                                "open: never recreated empty; repair with `sessionlake memory rebuild`).")
    def readable_check(lance: LanceResource) -> dg.AssetCheckResult:
        unreadable = _unreadable_result(lance.store(), tables)
        return unreadable or dg.AssetCheckResult(passed=True, description=f"{label}: every table opens")

    return [versions_check, small_fragments_check, rows_check, readable_check]


memory_checks = storage_checks("memory", (RECORDS, EDGES, PROVENANCE))


events_checks = storage_checks("events", (EVENTS,))
