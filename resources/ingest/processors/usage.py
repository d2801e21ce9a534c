"""The usage processor: one warehouse row per API response, counted once (see resources/usage/warehouse.py).

Agent-neutral: the file's source adapter (resources/sources/) turns its lines into keyed, ranked
rows; this keeps the best copy per key across the files of a commit and writes the batch.
"""

from __future__ import annotations

from pathlib import Path

from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.session_files import ParseStats
from resources.sources import source_type
from resources.sources.base import UsageItem
from resources.state.store import Connection
from resources.usage.pricing import PriceTable
from resources.usage.warehouse import sync_prices, unpriced_models, upsert_usage, usage_schema

FILES_PER_COMMIT = 5000
"""Rows of this many files are written per DuckDB transaction (bounded memory on a huge first ingest)."""


class UsageProcessor(SessionProcessor):
    """Turns a file's responses into ``usage_messages`` rows, batched per commit."""

    name = "usage"
    commit_every_files = FILES_PER_COMMIT
    parallel_reads = True

    def __init__(self, prices: PriceTable | None = None):
        self.prices = prices or PriceTable.load()
        self._batch: dict[str, tuple[tuple[int, int], dict]] = {}
        self.rows_written = 0
        self.unpriced_models: dict[str, int] = {}
        """Models of this run's rows that have no price, with their unpriced responses (whole warehouse)."""

    def begin_run(self) -> None:
        self._batch.clear()
        self.rows_written = 0
        self.unpriced_models = {}

    def process_session(self, session_path: Path, project: str, session_key: str,
                        conn: Connection, *, start_offset: int = 0) -> ProcessorResult:
        items, result = self.read_session(session_path, project, session_key, start_offset)
        self.take(items)
        return result

    @staticmethod
    def read_session(session_path: Path, project: str, session_key: str, start_offset: int = 0,
                     ) -> tuple[list[UsageItem], ProcessorResult]:
        stats = ParseStats()
        items = list(source_type(session_key).usage(session_path, session_key, project, start_offset, stats))
        return items, ProcessorResult(items_count=len(items), end_offset=stats.end_offset,
                                      bytes_read=stats.bytes_read, malformed=stats.malformed)

    def take(self, read: list[UsageItem]) -> None:
        for key, rank, row in read:
            current = self._batch.get(key)
            if current is None or rank > current[0]:
                self._batch[key] = (rank, {**row, **self.origin} if self.origin else row)

    def while_reading(self) -> None:
        """Load pyarrow (a large batch is written through Arrow) and the price database (a first run meets
        models it has not priced yet), ~0.3 s of CPU a first run would otherwise spend after the reads."""
        usage_schema()
        self.prices.load_database()

    def commit(self, conn: Connection) -> None:
        sync_prices(conn, self.prices)
        rows = [row for _, row in self._batch.values()]
        self.rows_written += upsert_usage(conn, rows, self.prices)
        models = sorted({r["model"] for r in rows if r["model"]})
        if models:
            for item in unpriced_models(conn, "list_contains($models, model)", {"models": models}):
                self.unpriced_models[item["model"]] = item["responses"]
        self._batch.clear()

    def discard(self) -> None:
        self._batch.clear()

    def end_run(self) -> dict:
        """``rows_written`` and ``unpriced_responses`` (numbers for the asset metadata); the model names are
        in `unpriced_models`."""
        return {"rows_written": self.rows_written, "unpriced_responses": sum(self.unpriced_models.values())}
