"""The warehouse side of sync: which rows to push, and merging a sync file into ``usage_messages``.

Counted once: a response is one row, keyed by the usage processor's key (``dedup_key``), whichever
machines hold it. Its numbers are the best copy among this machine's files and every sync file read
(the warehouse's rule: non-sidechain first, then the larger token total; `upsert_usage`). It is
attributed (``user_name``, ``machine``) to the first sync that held it: the lowest ``clock``, then
the lowest writer folder on a tie. The clock is logical (Lamport): a sync pulls before it pushes and
stamps its rows one above every clock it has read, so a sync that saw another's file always comes
after it, whatever the machines' wall clocks say; two syncs that did not see each other are ordered
by writer. Every machine that has read the same files agrees on every row.

A row is pushed when no sync file holds a copy as good as it (``sync_rank`` below its rank): a
response first read here, or read again here with more tokens than any machine synced.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from resources.state.store import fetch_one, transaction
from resources.sync.files import COLUMNS, FileName, Header, project_hash
from resources.usage.pricing import PriceTable
from resources.usage.warehouse import sync_prices, upsert_usage, usage_schema

RANK_SQL = ("(CASE WHEN {t}is_sidechain THEN 0 ELSE 1 END) * 4611686018427387904 + {t}input_tokens"
            " + {t}output_tokens + {t}cache_creation_tokens + {t}cache_read_tokens + {t}extra_output_tokens")
"""The warehouse's rank of a copy as one BIGINT: the sidechain flag above any token total."""

SESSION_PREFIX = "sync:"
"""``session_key`` of a row read from a sync file: ``sync:<session_ref>`` (the file's path never leaves its machine)."""

_OUT = [c for c in COLUMNS if c not in ("session_ref", "clock")]
_FIRST = ("(u.sync_clock IS NULL OR n.clock < u.sync_clock "
          "OR (n.clock = u.sync_clock AND $source < u.sync_source))")
"""Whether file ``n``'s copy was synced before the one a row is attributed to (by clock, then by writer)."""
_ATTRIBUTION = (("user_name", "$user"), ("machine", "$machine"), ("sync_clock", "n.clock"), ("sync_source", "$source"))


def unsynced_rows(conn: duckdb.DuckDBPyConnection) -> pa.Table:
    """The rows to push (see the module doc), with their ``session_key``, in `COLUMNS` but ``session_ref``
    and ``clock``."""
    return conn.execute(
        f"""SELECT {", ".join(_OUT)}, session_key FROM usage_messages
            WHERE {RANK_SQL.format(t="")} > coalesce(sync_rank, -1) ORDER BY ts, dedup_key""").to_arrow_table()


def local_projects(conn: duckdb.DuckDBPyConnection, key: bytes) -> dict[str, str]:
    """``{hashed name: name}`` of the projects this warehouse knows by name, to name hashed ones it also has."""
    rows = conn.execute("SELECT DISTINCT project FROM usage_messages WHERE NOT starts_with(project, '#')").fetchall()
    return {project_hash(key, p): p for (p,) in rows}


def clock(conn: duckdb.DuckDBPyConnection) -> int:
    """The highest clock of any sync file read here (0 before the first)."""
    row = fetch_one(conn, "SELECT value FROM meta WHERE key = 'sync_clock'")
    return int(row[0]) if row else 0


def merge_file(conn: duckdb.DuckDBPyConnection, name: FileName, header: Header, rows: pa.Table, nbytes: int,
               stored_at: datetime, prices: PriceTable | None, names: dict[str, str] | None = None,
               own: bool = False) -> int:
    """Merge one sync file's ``rows`` (see the module doc) and record the file as read; returns its rows.

    ``names`` maps hashed project names back to names this machine knows. Two transactions: the numbers
    (`upsert_usage`), then attribution and the file's record; a kill between them leaves the file
    unrecorded, and merging it again changes nothing twice. ``own``: a file this sync just wrote from
    this warehouse's rows, whose numbers are here already (only attribution and the record are written)."""
    if names and header.projects == "hash":
        rows = rows.set_column(rows.schema.get_field_index("project"), "project",
                               pa.array([names.get(p, p) for p in rows.column("project").to_pylist()], pa.string()))
    conn.register("_sync_in", rows)
    try:
        if not own:
            _upsert_numbers(conn, prices)
        with transaction(conn):
            conn.execute(
                f"""UPDATE usage_messages u SET sync_rank = greatest(coalesce(u.sync_rank, -1), n.rank),
                           {", ".join(f"{c} = CASE WHEN {_FIRST} THEN {v} ELSE u.{c} END" for c, v in _ATTRIBUTION)}
                    FROM (SELECT dedup_key, min(clock) AS clock, max({RANK_SQL.format(t="")}) AS rank
                          FROM _sync_in GROUP BY ALL) n
                    WHERE u.dedup_key = n.dedup_key AND ({_FIRST} OR coalesce(u.sync_rank, -1) < n.rank)""",
                {"user": header.user, "machine": header.machine, "source": header.source})
            top = max(clock(conn), int(conn.execute("SELECT coalesce(max(clock), 0) FROM _sync_in").fetchall()[0][0]))
            conn.execute("INSERT INTO meta VALUES ('sync_clock', ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = excluded.value", [str(top)])
            conn.execute("INSERT INTO sync_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         [name.name, name.source, header.user, header.machine, name.first, name.last, rows.num_rows,
                          nbytes, stored_at, datetime.now(UTC)])
    finally:
        conn.unregister("_sync_in")
    return rows.num_rows


def _upsert_numbers(conn: duckdb.DuckDBPyConnection, prices: PriceTable) -> None:
    """The best copy per key of ``_sync_in``, as warehouse rows (`upsert_usage` keeps the better copy)."""
    best = conn.execute(
        f"""SELECT * FROM _sync_in QUALIFY row_number() OVER (PARTITION BY dedup_key
            ORDER BY {RANK_SQL.format(t="")} DESC, clock) = 1""").to_arrow_table()
    conn.register("_sync_best", best)
    try:
        usage = conn.execute(
            f"""SELECT {", ".join(_as_usage(c) for c in usage_schema().names)} FROM _sync_best""").to_arrow_table()
    finally:
        conn.unregister("_sync_best")
    sync_prices(conn, prices)
    upsert_usage(conn, usage.cast(usage_schema()), prices)


def _as_usage(column: str) -> str:
    """``_sync_best``'s value for a ``usage_messages`` column: no branch, folder or attribution (set apart)."""
    if column == "session_key":
        return f"'{SESSION_PREFIX}' || session_ref AS session_key"
    if column in ("git_branch", "cwd", "user_name", "machine"):
        return f"CAST(NULL AS VARCHAR) AS {column}"
    return column


def read_files(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[int, int]]]:
    """Per writer, the ranges of sync numbers of the files read here."""
    out: dict[str, list[tuple[int, int]]] = {}
    for source, first, last in conn.execute("SELECT source, first_seq, last_seq FROM sync_files").fetchall():
        out.setdefault(source, []).append((first, last))
    return out
