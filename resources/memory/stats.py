"""What the memory holds, counted for people who look at it outside a recall: records per project."""

from __future__ import annotations

from collections.abc import Sequence

from resources.memory.schema import RECORDS, sql_str


def records_per_project(store, projects: Sequence[str]) -> dict[str, int]:
    """Rows of ``records`` per project of ``projects`` (captured records included), from one scan of the
    ``project`` column; a project without records is absent."""
    if not projects or not store.table_exists(RECORDS):
        return {}
    table = store.dataset(RECORDS)
    wanted = ", ".join(sql_str(p) for p in projects)
    counts = table.to_table(columns=["project"], filter=f"project IN ({wanted})").group_by("project").aggregate(
        [("project", "count")])
    return dict(zip(counts["project"].to_pylist(), counts["project_count"].to_pylist(), strict=True))
