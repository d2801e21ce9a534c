"""The usage processor: one warehouse row per API response, counted once (see resources/usage/warehouse.py).

Agent-neutral: the file's source adapter (resources/sources/) turns its lines into keyed, ranked
rows; this keeps the best copy per key across the files of a commit and writes the batch.

Rows travel column by column (`UsageRows`): a worker process that read a file sends lists of strings
and integers, which pickle and unpickle several times faster than a dict per row, and the batch
becomes an Arrow table one column at a time, without a Python object per row in the main process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter
from pathlib import Path

from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.session_files import ParseStats
from resources.sources import source_type
from resources.sources.base import UsageItem
from resources.state.store import SMALL_BATCH_ROWS, Connection
from resources.times import epoch_ms, utc_from_ms
from resources.usage.pricing import PriceTable
from resources.usage.warehouse import USAGE_COLUMNS, sync_prices, unpriced_models, upsert_usage, usage_schema

FILES_PER_COMMIT = 5000
"""Rows of this many files are written per DuckDB transaction (bounded memory on a huge first ingest)."""

_NAMES = tuple(name for name, _ in USAGE_COLUMNS)
_TS = _NAMES.index("ts")
_MODEL = _NAMES.index("model")
_REPEATED = frozenset(_NAMES.index(name) for name in ("session_id", "model", "git_branch", "cwd", "agent_id"))
"""Columns whose values repeat within a file: sent as one string object each, which pickle writes once."""


@dataclass
class UsageRows:
    """Usage rows column by column: ``keys`` and ``ranks`` (see `UsageItem`), and ``columns`` in
    `USAGE_COLUMNS` order, ``ts`` as milliseconds since the epoch (what its Arrow column holds)."""

    keys: list[str] = field(default_factory=list)
    ranks: list[tuple[int, int]] = field(default_factory=list)
    columns: list[list] = field(default_factory=lambda: [[] for _ in _NAMES])

    @classmethod
    def of(cls, items: list[UsageItem]) -> UsageRows:
        if not items:
            return cls()
        keys, ranks, rows = zip(*items, strict=True)
        columns = _transposed(rows)
        columns[_TS] = [epoch_ms(ts) for ts in columns[_TS]]
        for i in _REPEATED:
            same: dict = {}
            columns[i] = [same.setdefault(value, value) for value in columns[i]]
        return cls(list(keys), list(ranks), columns)

    def __len__(self) -> int:
        return len(self.keys)


def _transposed(rows: tuple[dict, ...]) -> list[list]:
    """The rows' values column by column, in `USAGE_COLUMNS` order (a missing key is None). Rows of one
    file have the same keys (one adapter made them): then the values are picked and transposed in C."""
    present = rows[0].keys()
    if any(row.keys() != present for row in rows):
        return [[row.get(name) for row in rows] for name in _NAMES]
    names = [name for name in _NAMES if name in present]
    picked = dict(zip(names, map(list, zip(*map(itemgetter(*names), rows), strict=True)), strict=True)) \
        if len(names) > 1 else {name: [row[name] for row in rows] for name in names}
    return [picked[name] if name in picked else [None] * len(rows) for name in _NAMES]


class UsageBatch:
    """The rows of one commit: every file's rows appended column by column, and for each key the
    position of its best copy (the first of equal rank wins, as within a file)."""

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
        for i, (column, added) in enumerate(zip(self.rows.columns, read.columns, strict=True)):
            name = _NAMES[i]
            column += [origin[name]] * len(read) if name in origin else added

    def models(self) -> list[str]:
        model = self.rows.columns[_MODEL]
        return sorted({model[p] for _, p in self.best.values() if model[p]})

    def table(self):
        """The best copy of each key, in the order the keys were first seen: an Arrow table when large,
        else dicts (a small batch is written without loading pyarrow, see `staged_rows`)."""
        positions = [p for _, p in self.best.values()]
        if len(positions) <= SMALL_BATCH_ROWS:
            columns = self.rows.columns
            return [{name: utc_from_ms(columns[i][p]) if i == _TS and columns[i][p] is not None else columns[i][p]
                     for i, name in enumerate(_NAMES)} for p in positions]
        import pyarrow as pa

        schema = usage_schema()
        table = pa.Table.from_arrays([pa.array(column, type=schema.field(i).type)
                                      for i, column in enumerate(self.rows.columns)], schema=schema)
        return table if positions == list(range(len(self.rows))) else table.take(positions)

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
        """Load pyarrow (a large batch is written through Arrow) and the price database (a first run meets
        models it has not priced yet), ~0.3 s of CPU a first run would otherwise spend after the reads."""
        usage_schema()
        self.prices.load_database()

    def commit(self, conn: Connection) -> None:
        sync_prices(conn, self.prices)
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
