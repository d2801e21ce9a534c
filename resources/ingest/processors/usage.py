"""The usage processor: one warehouse row per API response, counted once (see resources/usage/warehouse.py).

Agent-neutral: the file's source adapter (resources/sources/) turns its lines into keyed, ranked
rows; this keeps the best copy per key across the files of a commit and writes the batch.

A row travels as the JSON object DuckDB's JSON reader takes it in (`JsonRows`), encoded where the file was
read: a worker process sends bytes, which pickle and unpickle at the speed of a copy, and the process that
writes the batch hands the best copies to DuckDB as they are, without pyarrow (whose import alone costs that
process 0.2 s of CPU) and without a Python object per column value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from itertools import count
from pathlib import Path

from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.session_files import ParseStats
from resources.sources import source_type
from resources.sources.base import UsageItem
from resources.state.store import Connection, JsonRows
from resources.times import epoch_ms, utc_from_ms
from resources.usage.pricing import PriceTable
from resources.usage.warehouse import unpriced_models, upsert_usage

FILES_PER_COMMIT = 2500
"""Rows of this many files are written per DuckDB transaction (bounded memory on a huge first ingest). A batch
is held as JSON lines and staged through DuckDB's JSON reader: 5,000 files lifted the peak of a cold
20,000-session ingest by 160-330 MB (direct call: 733 MB at 2,500, 894 MB at 5,000); a first report of up to
2,500 sessions still commits once."""


@dataclass
class UsageRows:
    """Usage rows: ``keys`` and ``ranks`` (see `UsageItem`), each row's ``model``, and the rows as ``lines``
    (one JSON object each, `JsonRows`; ``ts`` in UTC truncated to the millisecond, as its column holds it)."""

    keys: list[str] = field(default_factory=list)
    ranks: list[tuple[int, int]] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, items: list[UsageItem]) -> UsageRows:
        import orjson  # here: a stored report's check never loads it

        dumps = orjson.dumps
        rows = cls()
        for key, rank, row in items:
            rows.keys.append(key)
            rows.ranks.append(rank)
            if row.__class__ is not dict:  # encodes itself (see `UsageItem`)
                rows.models.append(row.model)
                rows.lines.append(row.json())
                continue
            rows.models.append(row.get("model"))
            ts = row.get("ts")
            rows.lines.append(dumps(row if ts is None else {**row, "ts": _in_column(ts)}))
        return rows

    def __len__(self) -> int:
        return len(self.keys)


def _in_column(ts):
    """``ts`` (naive: UTC) as the ``timestamp[ms]`` column holds it: in UTC, below a millisecond dropped."""
    return utc_from_ms(epoch_ms(ts)) if ts.microsecond % 1000 or ts.tzinfo is not UTC else ts


class UsageBatch:
    """The rows of one commit: every file's rows appended, and for each key the position of its best copy
    (the first of equal rank wins, as within a file)."""

    def __init__(self):
        self.rows = UsageRows()
        self.best: dict[str, tuple[tuple[int, int], int]] = {}

    def add(self, read: UsageRows, origin: dict[str, str]) -> None:
        best = self.best
        for position, key, rank in zip(count(len(self.rows)), read.keys, read.ranks, strict=False):
            current = best.get(key)
            if current is None or rank > current[0]:
                best[key] = (rank, position)
        self.rows.keys += read.keys
        self.rows.ranks += read.ranks
        self.rows.models += read.models
        if origin:  # a pushed file's rows carry who they come from (rare: re-encoded)
            import orjson

            self.rows.lines += [orjson.dumps({**orjson.loads(line), **origin}) for line in read.lines]
        else:
            self.rows.lines += read.lines

    def models(self) -> list[str]:
        model = self.rows.models
        return sorted({model[p] for _, p in self.best.values() if model[p]})

    def table(self) -> JsonRows:
        """The best copy of each key, in the order the keys were first seen."""
        lines = self.rows.lines
        return JsonRows(lines[p] for _, p in self.best.values())

    def clear(self) -> None:
        self.rows = UsageRows()
        self.best.clear()


class UsageProcessor(SessionProcessor):
    """Turns a file's responses into ``usage_messages`` rows, batched per commit."""

    name = "usage"
    commit_every_files = FILES_PER_COMMIT
    parallel_reads = True

    def __init__(self, prices: PriceTable | None = None):
        self.prices = prices or PriceTable.load()
        self._batch = UsageBatch()
        self.rows_written = 0
        self.unpriced_models: dict[str, int] = {}
        """Models of this run's rows that have no price, with their unpriced responses (whole warehouse)."""

    def begin_run(self) -> None:
        self._batch.clear()
        self.rows_written = 0
        self.unpriced_models = {}

    @staticmethod
    def read_session(session_path: Path, project: str, session_key: str, start_offset: int = 0,
                     ) -> tuple[UsageRows, ProcessorResult]:
        stats = ParseStats()
        items = list(source_type(session_key).usage(session_path, session_key, project, start_offset, stats))
        return UsageRows.of(items), ProcessorResult(items_count=len(items), end_offset=stats.end_offset,
                                                    bytes_read=stats.bytes_read, malformed=stats.malformed)

    def take(self, read: UsageRows) -> None:
        self._batch.add(read, self.origin)

    def while_reading(self) -> None:
        """Load the price database (a first run meets models it has not priced yet), ~0.15 s of CPU a first
        run would otherwise spend after the reads."""
        self.prices.load_database()

    def commit(self, conn: Connection) -> None:
        self.rows_written += upsert_usage(conn, self._batch.table(), self.prices)
        models = self._batch.models()
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
