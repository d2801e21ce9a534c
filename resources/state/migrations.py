"""The warehouse's schema as a ladder of migrations: every version's statements, oldest first.

`resources.state.store.migrate` runs the rungs a database has not reached yet.
"""

from __future__ import annotations

Migration = tuple[int, tuple[str, ...]]
"""(version, statements). Statements must be idempotent on their own (IF NOT EXISTS), so a ladder
interrupted half way can be re-run; the version row is written in the same transaction."""

MIGRATIONS: list[Migration] = [
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS session_files (
                path VARCHAR PRIMARY KEY,
                project VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                mtime_ns BIGINT NOT NULL,
                file_hash VARCHAR,
                first_seen TIMESTAMPTZ NOT NULL,
                last_seen TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS session_processor_state (
                processor_name VARCHAR NOT NULL,
                session_file VARCHAR NOT NULL,
                username VARCHAR NOT NULL,
                processed_at TIMESTAMPTZ NOT NULL,
                items_extracted BIGINT NOT NULL,
                file_hash VARCHAR NOT NULL,
                PRIMARY KEY (processor_name, session_file)
            )""",
        ),
    ),
    (
        2,
        (
            # Incremental reads: where each processor stopped, and a fingerprint of the bytes just
            # before that point, to tell an appended file from a rewritten one without re-reading it.
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS file_size BIGINT DEFAULT 0",
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS byte_offset BIGINT DEFAULT 0",
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS tail_hash VARCHAR",
            "ALTER TABLE session_files ADD COLUMN IF NOT EXISTS byte_offset BIGINT DEFAULT 0",
        ),
    ),
    (
        3,
        (
            """CREATE TABLE IF NOT EXISTS usage_messages (
                dedup_key VARCHAR NOT NULL,
                message_id VARCHAR,
                request_id VARCHAR,
                ts TIMESTAMPTZ NOT NULL,
                session_id VARCHAR,
                session_key VARCHAR NOT NULL,
                project VARCHAR NOT NULL,
                model VARCHAR,
                git_branch VARCHAR,
                cwd VARCHAR,
                is_sidechain BOOLEAN NOT NULL,
                agent_id VARCHAR,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cache_creation_tokens BIGINT NOT NULL,
                cache_read_tokens BIGINT NOT NULL,
                cache_creation_1h_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd DOUBLE,
                computed_cost_usd DOUBLE,
                line_offset BIGINT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS model_prices (
                model VARCHAR PRIMARY KEY,
                input_per_mtok DOUBLE NOT NULL,
                output_per_mtok DOUBLE NOT NULL,
                cache_write_per_mtok DOUBLE NOT NULL,
                cache_write_1h_per_mtok DOUBLE NOT NULL,
                cache_read_per_mtok DOUBLE NOT NULL
            )""",
            "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
            # Lines that could not be parsed, kept so a person can find what was skipped.
            """CREATE TABLE IF NOT EXISTS malformed_lines (
                session_key VARCHAR NOT NULL,
                byte_offset BIGINT NOT NULL,
                length BIGINT NOT NULL,
                error VARCHAR NOT NULL,
                preview VARCHAR,
                seen_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (session_key, byte_offset)
            )""",
        ),
    ),
    (
        4,
        (
            # The archive (resources/archive/packs.py). A pack row is written only after its file is durable;
            # `tombstoned` packs are deleted by a sweep after the grace period, then their row goes.
            """CREATE TABLE IF NOT EXISTS packs (
                pack_key VARCHAR PRIMARY KEY,
                repo VARCHAR NOT NULL,
                bytes BIGINT NOT NULL,
                object_count BIGINT NOT NULL,
                snapshot_count BIGINT NOT NULL,
                state VARCHAR NOT NULL CHECK (state IN ('live', 'tombstoned')),
                created_at TIMESTAMPTZ NOT NULL,
                tombstoned_at TIMESTAMPTZ
            )""",
            """CREATE TABLE IF NOT EXISTS pack_index (
                repo VARCHAR NOT NULL,
                object_id VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                stored_size BIGINT NOT NULL,
                PRIMARY KEY (repo, object_id)
            )""",
            """CREATE TABLE IF NOT EXISTS snapshots (
                repo VARCHAR NOT NULL,
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                mtime_ns BIGINT NOT NULL,
                chunks VARCHAR[] NOT NULL,
                pack_key VARCHAR NOT NULL,
                archived_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (repo, session_key, file_hash)
            )""",
        ),
    ),
    (
        5,
        (
            # Prices as bands (resources/usage/pricing.py): per model, per price period and long-context tier.
            # model_prices was a cache of the price table with one row per model; the old fingerprint goes
            # with it, so the next sync re-costs every stored row.
            "DROP TABLE IF EXISTS model_prices",
            """CREATE TABLE IF NOT EXISTS price_bands (
                model VARCHAR NOT NULL,
                valid_from TIMESTAMPTZ,
                valid_to TIMESTAMPTZ,
                above_tokens BIGINT NOT NULL,
                up_to_tokens BIGINT,
                input_per_mtok DOUBLE NOT NULL,
                output_per_mtok DOUBLE NOT NULL,
                cache_write_per_mtok DOUBLE NOT NULL,
                cache_write_1h_per_mtok DOUBLE NOT NULL,
                cache_read_per_mtok DOUBLE NOT NULL,
                matched VARCHAR NOT NULL,
                source VARCHAR NOT NULL
            )""",
            "DELETE FROM meta WHERE key = 'price_fingerprint'",
        ),
    ),
    (
        6,
        (
            # The archive's timeline: every time an ingest saw a version on disk (a file that goes
            # A -> B -> A has two observations of A). `snapshots` holds each content once.
            """CREATE TABLE IF NOT EXISTS snapshot_observations (
                repo VARCHAR NOT NULL,
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                mtime_ns BIGINT NOT NULL,
                observed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (repo, session_key, file_hash, mtime_ns)
            )""",
            """INSERT INTO snapshot_observations
               SELECT repo, session_key, file_hash, mtime_ns, archived_at FROM snapshots ON CONFLICT DO NOTHING""",
        ),
    ),
    (
        7,
        (
            # Sources other than Claude Code (resources/sources/): each row says which agent wrote it, and
            # the output some agents report apart from output_tokens (Gemini's thoughts, OpenCode's
            # reasoning). Every row stored before is Claude Code's; its session keys and project names
            # (the partition keys) are unchanged, so nothing else moves.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS agent VARCHAR DEFAULT 'claude'",
            "UPDATE usage_messages SET agent = 'claude' WHERE agent IS NULL",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS extra_output_tokens BIGINT DEFAULT 0",
        ),
    ),
    (
        8,
        (
            # Team deployments (resources/team/): who a row came from. NULL on rows ingested from this
            # machine's own sessions folder; set on rows the central deployment ingests from pushed packs.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS user_name VARCHAR",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS machine VARCHAR",
            # On a machine that pushes: which packs are already in which team bucket.
            """CREATE TABLE IF NOT EXISTS pushed_packs (
                remote VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                manifest VARCHAR NOT NULL,
                pushed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (remote, pack_key)
            )""",
            # On the central deployment: manifests and packs ingested (a pack pushed by two machines
            # is read once), and the first user and machine that pushed each session version.
            """CREATE TABLE IF NOT EXISTS team_manifests (
                manifest VARCHAR PRIMARY KEY,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                packs BIGINT NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS team_packs (
                pack_key VARCHAR PRIMARY KEY,
                manifest VARCHAR NOT NULL,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS team_snapshots (
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                PRIMARY KEY (session_key, file_hash)
            )""",
        ),
    ),
    (
        9,
        (
            # Personal sync (resources/sync/): per response, the best copy any sync file holds (its rank,
            # as the warehouse ranks copies), and the logical clock and writer of the first file that
            # held it: the machine it is attributed to. NULL on rows no sync file holds yet.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS sync_rank BIGINT",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS sync_clock BIGINT",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS sync_source VARCHAR",
            # Every sync file read into this warehouse (this machine's own too), so none is read twice.
            """CREATE TABLE IF NOT EXISTS sync_files (
                name VARCHAR PRIMARY KEY,
                source VARCHAR NOT NULL,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                first_seq BIGINT NOT NULL,
                last_seq BIGINT NOT NULL,
                rows BIGINT NOT NULL,
                bytes BIGINT NOT NULL,
                stored_at TIMESTAMPTZ NOT NULL,
                read_at TIMESTAMPTZ NOT NULL
            )""",
        ),
    ),
    (
        10,
        (
            # ccusage's Codex figures: the reasoning part of the output, shown apart, and the session id
            # as ccusage names it (the rollout's path under sessions/ or archived_sessions/, no .jsonl).
            # Codex files are read again on the next ingest or report (their usage state is dropped) so
            # the rows stored before learn their reasoning split; a rollout Codex has deleted keeps 0.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS reasoning_output_tokens BIGINT DEFAULT 0",
            """UPDATE usage_messages SET session_id = regexp_replace(regexp_replace(
                   substr(session_key, 7), '^(sessions|archived_sessions)/', ''), '[.]jsonl$', '')
               WHERE agent = 'codex'""",
            "DELETE FROM session_processor_state WHERE processor_name = 'usage' AND session_file LIKE 'codex:%'",
        ),
    ),
    (
        11,
        (
            # Which Lance tables have existed, per Lance location (a folder or a bucket prefix), so a
            # table whose folder disappeared is reported as lost instead of recreated empty
            # (resources/memory/table_ledger.py).
            """CREATE TABLE IF NOT EXISTS lance_tables (
                location VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                first_seen TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (location, name)
            )""",
        ),
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
