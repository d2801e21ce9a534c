"""The other machines this warehouse has synced with, and when each last synced (no pyarrow: reports read it)."""

from __future__ import annotations

import duckdb

from resources.state.store import fetch_one


def other_machines(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """Every other writer read here: ``source``, ``user``, ``machine``, ``files``, ``rows`` and ``last_synced``
    (when its newest file was stored, by the storage's clock, never later than when it was read here:
    a machine whose clock runs ahead does not look as if it synced in the future)."""
    own = fetch_one(conn, "SELECT value FROM meta WHERE key = 'sync_id'")
    rows = conn.execute(
        """SELECT source, any_value(user_name), any_value(machine), count(*), sum(rows),
                  max(least(stored_at, read_at))
           FROM sync_files WHERE NOT ends_with(source, $own) GROUP BY source ORDER BY source""",
        {"own": f"/{own[0]}" if own else "/"}).fetchall()
    return [{"source": s, "user": u, "machine": m, "files": int(f), "rows": int(r), "last_synced": t}
            for s, u, m, f, r, t in rows]
