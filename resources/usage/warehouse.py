"""Writing the usage warehouse: one row per API response, de-duplicated, costed from the price table.

A response is written as several transcript lines sharing ``message.id`` and ``requestId``; input and
cache counts repeat and ``output_tokens`` is final only on the last. The row kept per key is the
best copy: a non-sidechain copy beats a sidechain one, then the larger token total wins. The same rule
decides within a batch and against rows already stored, so re-ingesting a grown or rewritten file
never double-counts and never loses the final output count.
"""

from __future__ import annotations

import functools

import duckdb

from resources.state.store import (
    TIMESTAMPTZ_MS,
    arrow_schema,
    fetch_one,
    registered,
    staged_rows,
    transaction,
)
from resources.usage.pricing import UNPRICED_MODELS, PriceTable

USAGE_COLUMNS = (
    ("dedup_key", "VARCHAR"), ("message_id", "VARCHAR"), ("request_id", "VARCHAR"), ("ts", TIMESTAMPTZ_MS),
    ("session_id", "VARCHAR"), ("session_key", "VARCHAR"), ("project", "VARCHAR"), ("model", "VARCHAR"),
    ("git_branch", "VARCHAR"), ("cwd", "VARCHAR"), ("is_sidechain", "BOOLEAN"), ("agent_id", "VARCHAR"),
    ("input_tokens", "BIGINT"), ("output_tokens", "BIGINT"), ("cache_creation_tokens", "BIGINT"),
    ("cache_read_tokens", "BIGINT"), ("cache_creation_1h_tokens", "BIGINT"), ("cost_usd", "DOUBLE"),
    ("line_offset", "BIGINT"), ("agent", "VARCHAR"), ("extra_output_tokens", "BIGINT"), ("user_name", "VARCHAR"),
    ("machine", "VARCHAR"), ("reasoning_output_tokens", "BIGINT"),
)
"""The columns of a usage row, with their types (see resources/state/store.py `arrow_schema`)."""


@functools.cache
def usage_schema():
    """The Arrow schema of a usage row (pyarrow is imported here: a report that writes nothing never loads it)."""
    return arrow_schema(USAGE_COLUMNS)


# Higher is better: non-sidechain first, then the larger token total.
_RANK = "(CASE WHEN {t}.is_sidechain THEN 0 ELSE 1 END, {t}.input_tokens + {t}.output_tokens " \
        "+ {t}.cache_creation_tokens + {t}.cache_read_tokens + {t}.extra_output_tokens)"

# A session key without its project folder: equal for the same file after the folder was renamed.
_IN_PROJECT = "substr({t}.session_key, length({t}.project) + 1)"

_COMPUTED_COST = """(p.input_per_mtok * b.input_tokens + p.output_per_mtok * (b.output_tokens + b.extra_output_tokens)
    + p.cache_write_per_mtok * (b.cache_creation_tokens - b.cache_creation_1h_tokens)
    + p.cache_write_1h_per_mtok * b.cache_creation_1h_tokens
    + p.cache_read_per_mtok * b.cache_read_tokens) / 1e6"""

# The one price band of row b: its model, the price period of its timestamp, and the long-context tier of its
# request input (input + cache writes + cache reads, as the providers count it). Open ends are coalesced rather
# than tested with OR: with OR, DuckDB plans a nested-loop join instead of a hash join on the model.
_REQUEST_INPUT = "(b.input_tokens + b.cache_creation_tokens + b.cache_read_tokens)"
_BAND_MATCH = f"""p.model = b.model
    AND b.ts >= coalesce(p.valid_from, '-infinity'::TIMESTAMPTZ)
    AND b.ts < coalesce(p.valid_to, 'infinity'::TIMESTAMPTZ)
    AND {_REQUEST_INPUT} > p.above_tokens
    AND {_REQUEST_INPUT} <= coalesce(p.up_to_tokens, 9223372036854775807)"""


def upsert_usage(conn: duckdb.DuckDBPyConnection, rows, prices: PriceTable) -> int:
    """Write ``rows`` (one per key, already the best copy within the batch: dicts or `JsonRows` in
    `USAGE_COLUMNS`, or an Arrow table in `usage_schema`); returns rows written.

    A stored row is replaced only by a better copy, by an equal copy of the same file under
    another project folder (the folder was renamed: the row follows it), or by an equal copy that
    tells more (its reasoning split); new keys are appended. The table has no primary
    key index (maintaining one made bulk loads several times slower), so uniqueness of ``dedup_key``
    is this function's job: one transaction, run only under DuckDB's single-writer lock. A row without
    a user and machine (read from this machine's files) keeps those of the row it replaces: a better
    copy read here of a response another machine synced first stays attributed to that machine. The same
    transaction re-costs the stored rows first when the price table changed (`sync_prices`).
    """
    arrow = not isinstance(rows, list | tuple)
    count = rows.num_rows if arrow else len(rows)
    if count == 0:
        return 0
    if arrow:
        columns = rows.column_names
        staged = registered(conn, "_usage_batch", rows)
    else:
        columns = [c for c, _ in USAGE_COLUMNS]
        staged = staged_rows(conn, "_usage_batch", rows, USAGE_COLUMNS)
    priced = f"""SELECT {", ".join("b." + c for c in columns)}, {_COMPUTED_COST} AS computed_cost_usd
                 FROM _usage_batch b LEFT JOIN price_bands p ON {_BAND_MATCH}"""
    with staged, transaction(conn):
        stored = fetch_one(conn, "SELECT 1 FROM usage_messages LIMIT 1") is not None
        fingerprint = _price_fingerprint_changed(conn, prices)
        if fingerprint is not None:
            _resync_prices(conn, prices, fingerprint, stored)
        models = {m for (m,) in conn.execute("SELECT DISTINCT model FROM _usage_batch WHERE model <> ''").fetchall()}
        _store_prices(conn, prices, models)  # in the transaction: one write to disk, not one per band
        if stored:  # nothing to replace in a new warehouse (a first report): the join is skipped
            conn.execute(
                f"""UPDATE usage_messages SET {", ".join(_assign(c) for c in columns if c != "dedup_key")},
                       computed_cost_usd = n.computed_cost_usd
                    FROM ({priced}) n
                    WHERE usage_messages.dedup_key = n.dedup_key
                      AND ({_RANK.format(t="n")} > {_RANK.format(t="usage_messages")}
                           OR ({_RANK.format(t="n")} = {_RANK.format(t="usage_messages")}
                               AND ((n.project <> usage_messages.project
                                     AND {_IN_PROJECT.format(t="n")} = {_IN_PROJECT.format(t="usage_messages")})
                                    OR n.reasoning_output_tokens > usage_messages.reasoning_output_tokens)))"""
            )
        conn.execute(
            f"""INSERT INTO usage_messages ({", ".join(columns)}, computed_cost_usd)
                SELECT * FROM ({priced}) n
                WHERE NOT EXISTS (SELECT 1 FROM usage_messages u WHERE u.dedup_key = n.dedup_key)"""
        )
    return count


def _assign(column: str) -> str:
    if column in ("user_name", "machine"):  # attribution: kept when the better copy has none
        return f"{column} = coalesce(n.{column}, usage_messages.{column})"
    return f"{column} = n.{column}"


def sync_prices(conn: duckdb.DuckDBPyConnection, prices: PriceTable) -> bool:
    """Re-cost every stored row if the price table changed since the last sync; True if it did. (`upsert_usage`
    does this in its own transaction.)"""
    fingerprint = _price_fingerprint_changed(conn, prices)
    if fingerprint is None:
        return False
    with transaction(conn):
        _resync_prices(conn, prices, fingerprint)
    return True


def _price_fingerprint_changed(conn: duckdb.DuckDBPyConnection, prices: PriceTable) -> str | None:
    """The price table's fingerprint when the warehouse's rows were costed by another one, else None."""
    fingerprint = prices.fingerprint()
    row = fetch_one(conn, "SELECT value FROM meta WHERE key = 'price_fingerprint'")
    return None if row and row[0] == fingerprint else fingerprint


def _resync_prices(conn: duckdb.DuckDBPyConnection, prices: PriceTable, fingerprint: str,
                   stored: bool = True) -> None:
    """In a transaction: `sync_prices`' work, the rows costed by the table whose fingerprint changed to
    ``fingerprint`` (``stored``: whether usage_messages has rows to re-cost)."""
    conn.execute("DELETE FROM price_bands")
    if stored:
        rows = conn.execute("SELECT DISTINCT model FROM usage_messages WHERE model IS NOT NULL").fetchall()
        _store_prices(conn, prices, {r[0] for r in rows})
        conn.execute(
            f"""UPDATE usage_messages b SET computed_cost_usd = (
                    SELECT {_COMPUTED_COST} FROM price_bands p WHERE {_BAND_MATCH})"""
        )
    conn.execute(
        "INSERT INTO meta VALUES ('price_fingerprint', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [fingerprint],
    )


def unpriced_models(conn: duckdb.DuckDBPyConnection, where: str = "TRUE", params: dict | None = None) -> list[dict]:
    """``[{model, responses}]``: models with billable tokens but no price, among rows matching ``where``
    (SQL over usage_messages, with named ``params``). What reports call ``unpricedModels``."""
    sql = f"""SELECT coalesce(model, 'unknown'), count(*) FROM usage_messages
              WHERE ({where}) AND computed_cost_usd IS NULL
                AND input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens > 0
              GROUP BY ALL ORDER BY 1"""
    params = {k: v for k, v in (params or {}).items() if f"${k}" in sql}
    rows = conn.execute(sql, params).fetchall()
    return [{"model": m, "responses": int(n)} for m, n in rows if m not in UNPRICED_MODELS]


def _store_prices(conn: duckdb.DuckDBPyConnection, prices: PriceTable, models: set[str]) -> None:
    known = {r[0] for r in conn.execute("SELECT DISTINCT model FROM price_bands").fetchall()}
    rows = [[m, b.valid_from, b.valid_to, b.above_tokens, b.up_to_tokens, b.rates.input, b.rates.output,
             b.rates.cache_write, b.rates.cache_write_1h, b.rates.cache_read, p.matched, p.source]
            for m, p in prices.resolve(models - known).items() for b in p.bands]
    if rows:
        conn.executemany("INSERT INTO price_bands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
