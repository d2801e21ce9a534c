"""`sync`: read this machine's sessions (usage only), pull every sync file not read yet, push what no
file holds, compact this machine's files when they pile up.

Contract:
- One sync per data home at a time (a lock file in the home; a second waits up to `LOCK_WAIT_SEC`,
  then gives up with `SyncBusy`). Machines never wait for each other: each writes only below its
  own folder, ``usage/<machine>/<id>/``.
- Pull first: every file whose sync numbers are not all covered by files read before (this machine's
  own too: a file a killed sync wrote but never recorded is read back, so its rows are not pushed
  twice). A file that cannot be read (damaged, a newer version, not ours under our name pattern)
  is reported and skipped, and tried again next time; every other file is read. A name that is not
  a sync file's (a foreign file) is reported and left alone. Hidden names (``.*``) are not looked at.
- Then push: the rows no file holds yet, in one new file numbered one above this machine's highest,
  written create-only; then merged back here as read. A kill before the write leaves nothing; after
  it, the next sync reads the file back. Either way nothing is lost or counted twice.
- Then, when this machine has more than ``compact_at`` files, they are merged into one file covering
  all their numbers (per response the best copy, stamped with its first clock), and the others are
  deleted. A reader that read them all skips the merged file by its numbers; a reader that lists both
  the merged file and some of its parts (a compaction under way, or killed half way) merges the same
  rows twice, which counts nothing twice. A compaction killed before it deleted every part is finished
  by the next sync, which deletes every file of this machine that a compacted one covers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from resources.config.settings import Settings
from resources.state.store import LOCK_WAIT_SEC as LOCK_WAIT
from resources.state.store import StateStore, fetch_one
from resources.sync.files import PREFIX, FileName, Header, SyncFileError, decode, encode, project_hash, session_ref
from resources.sync.machines import other_machines
from resources.sync.warehouse import (
    RANK_SQL,
    SESSION_PREFIX,
    clock,
    local_projects,
    merge_file,
    read_files,
    unsynced_rows,
)
from resources.usage.pricing import PriceTable
from resources.usage.refresh import fresh_warehouse

COMPACT_AT = 16
"""This machine's files are merged into one when there are more than this many."""
LOCK_WAIT_SEC = 60.0
LOCK_FILE = "sync.lock"


class SyncBusy(RuntimeError):
    """Another sync of the same data home holds the lock."""


@dataclass(frozen=True)
class SyncOptions:
    """What this machine calls itself and how it names projects: ``projects`` is ``name`` or ``hash``
    (with ``key``, the same on every machine)."""

    user: str
    machine: str
    projects: str = "name"
    key: bytes | None = None
    compact_at: int = COMPACT_AT


def sync(settings: Settings, blobs, opts: SyncOptions, log: Callable[[str], None] = lambda _m: None,
         transcripts=None) -> dict:
    """One sync against ``blobs`` (a `Blobs` or `FolderBlobs`); returns what it did:
    ``ingest`` (session files read, with `fresh_warehouse`, which says their errors on stderr),
    ``pulled_files``, ``pulled_rows``, ``pushed_rows``, ``pushed_bytes``,
    ``pushed_file``, ``compacted`` (files merged, or 0), ``errors`` and ``foreign`` (names),
    ``machines`` (every other writer read here, with when it last synced); with ``transcripts`` (the
    location, as `sync_location` gives it), ``transcripts``: the packs sent and taken in
    (`resources.sync.transcripts`)."""
    state = StateStore.from_settings(settings)
    report = {"pulled_files": 0, "pulled_rows": 0, "pushed_rows": 0, "pushed_bytes": 0, "pushed_file": None,
              "compacted": 0, "errors": [], "foreign": []}
    with _lock(settings.home / LOCK_FILE):
        prices = PriceTable.load(settings.price_file)
        with fresh_warehouse(settings, lock_wait_sec=LOCK_WAIT, prices=prices, command="sessionlake sync") as fresh:
            report["ingest"] = {"files": fresh.files_read, "errors": fresh.errors or []}
        listing = _listing(blobs, report)
        # Each connection is opened once per step: opening and closing one costs a checkpoint.
        with state.connect() as conn:
            header = Header(opts.user, opts.machine, _home_id(conn), opts.projects)
            names = local_projects(conn, opts.key) if opts.key else {}
            done = read_files(conn)
            _pull(conn, blobs, listing, done, prices, names, report, log)
            rows, tick = unsynced_rows(conn), clock(conn) + 1
        own = [n for n in listing if n.source == header.source]
        pushed = None
        if rows.num_rows:
            seq = max([n.last for n in own] + [last for _, last in done.get(header.source, [])] + [0]) + 1
            pushed, out, data = _push(blobs, header, rows, seq, tick, opts)
            report.update(pushed_rows=out.num_rows, pushed_bytes=len(data), pushed_file=pushed.name)
            log(f"pushed {pushed.name}: {out.num_rows} responses, {len(data):,} bytes")
        with state.connect() as conn:
            if pushed is not None:  # this machine's copies are now synced: attribution and sync rank
                merge_file(conn, pushed, header, out, len(data), datetime.now(UTC), None, own=True)
            report["machines"] = other_machines(conn)
        if pushed is not None:
            own.append(pushed)
        own = _drop_superseded(blobs, own, log)
        if len(own) > opts.compact_at:
            report["compacted"] = _compact(blobs, header, own, log)
        if transcripts is not None:  # under the same lock: two syncs of one home never exchange packs at once
            from resources.sync.transcripts import pull_transcripts, push_transcripts

            report["transcripts"] = push_transcripts(settings, transcripts, opts.user, opts.machine, log)
            report["transcripts"]["received"] = pull_transcripts(settings, transcripts, log)
    return report


def pull(state: StateStore, blobs, prices: PriceTable, log: Callable[[str], None] = lambda _m: None) -> dict:
    """Read every sync file under ``blobs`` that ``state`` has not read, and nothing else: what a team's central
    deployment does with the files its members' machines sync to the team bucket. Returns ``pulled_files``,
    ``pulled_rows``, ``errors`` and ``foreign``, as `sync`."""
    report = {"pulled_files": 0, "pulled_rows": 0, "errors": [], "foreign": []}
    listing = _listing(blobs, report)
    with state.connect() as conn:
        _pull(conn, blobs, listing, read_files(conn), prices, {}, report, log)
    return report


def _listing(blobs, report: dict) -> dict[FileName, datetime]:
    """Every sync file in the location, with when it was stored; other names go to ``report["foreign"]``."""
    listing = {}
    for blob in blobs.list(PREFIX):
        name = FileName.parse(blob.name)
        if name is None and "/." in f"/{blob.name}":  # hidden: a Finder's .DS_Store, a writer's temporary
            continue
        if name is None:
            report["foreign"].append(blob.name)
        else:
            listing[name] = blob.modified
    return listing


def _pull(conn, blobs, listing: dict[FileName, datetime], done: dict[str, list[tuple[int, int]]],
          prices: PriceTable, names: dict, report: dict, log) -> None:
    """Merge every file of ``listing`` whose numbers ``done`` (updated here) does not cover yet."""
    for name in sorted(listing, key=lambda n: (n.source, n.first, n.last)):
        if _covered(done.get(name.source, []), name.first, name.last):
            continue
        try:
            data = blobs.get_bytes(name.name)
        except FileNotFoundError:  # compacted away since the listing: its rows are in the merged file
            continue
        try:
            header, rows = decode(name, data)
        except SyncFileError as exc:
            report["errors"].append(str(exc))
            log(f"skipped {exc}")
            continue
        report["pulled_rows"] += merge_file(conn, name, header, rows, len(data), listing[name], prices, names)
        report["pulled_files"] += 1
        done.setdefault(name.source, []).append((name.first, name.last))
        log(f"pulled {name.name}: {rows.num_rows} responses from {header.user}@{header.machine}")


def _push(blobs, header: Header, rows: pa.Table, seq: int, tick: int,
          opts: SyncOptions) -> tuple[FileName, pa.Table, bytes]:
    """Write ``rows`` as this machine's file number ``seq``, stamped ``tick``; returns its name, rows, bytes."""
    out = _outgoing(rows, tick, opts)
    file, data = encode(out, header, seq, seq)
    blobs.put_bytes_if_absent(file, data)
    return FileName.parse(file), out, data


def _outgoing(rows: pa.Table, tick: int, opts: SyncOptions) -> pa.Table:
    """Rows as they leave: the session file's key replaced by its digest, projects hashed if asked, the clock."""
    keys = rows.column("session_key").to_pylist()
    refs = {k: k[len(SESSION_PREFIX):] if k.startswith(SESSION_PREFIX) else session_ref(k) for k in set(keys)}
    rows = rows.drop_columns(["session_key"]).append_column("session_ref", pa.array([refs[k] for k in keys]))
    if opts.projects == "hash":
        projects = rows.column("project").to_pylist()
        hashed = {p: p if p.startswith("#") else project_hash(opts.key, p) for p in set(projects)}
        rows = rows.set_column(rows.schema.get_field_index("project"), "project",
                               pa.array([hashed[p] for p in projects], pa.string()))
    return rows.append_column("clock", pa.array([tick] * rows.num_rows, pa.int64()))


def _compact(blobs, header: Header, own: list[FileName], log) -> int:
    """Merge ``own`` into one file and delete the others; returns how many were merged (0 if one vanished)."""
    tables = []
    for name in own:
        try:
            tables.append(decode(name, blobs.get_bytes(name.name))[1])
        except (FileNotFoundError, SyncFileError) as exc:
            log(f"not compacting: {exc}")
            return 0
    with contextlib.closing(duckdb.connect()) as mem:
        mem.register("_all", pa.concat_tables(tables))
        merged = mem.execute(
            f"""SELECT * REPLACE (min(clock) OVER (PARTITION BY dedup_key) AS clock) FROM _all
                QUALIFY row_number() OVER (PARTITION BY dedup_key ORDER BY {RANK_SQL.format(t="")} DESC, clock) = 1
                ORDER BY ts, dedup_key""").to_arrow_table()
    file, data = encode(merged, header, min(n.first for n in own), max(n.last for n in own))
    blobs.put_bytes_if_absent(file, data)
    for name in own:
        if name.name != file:
            blobs.delete(name.name)
    log(f"compacted {len(own)} files of this machine into {file} ({merged.num_rows} responses)")
    return len(own)


def _drop_superseded(blobs, own: list[FileName], log) -> list[FileName]:
    """Delete this machine's files that a compacted file of its own covers (a compaction killed before it
    deleted them all: the compacted file was written from them, so it holds their rows); the others."""
    merged = [n for n in own if n.first < n.last]
    left = []
    for name in own:
        if any(m.first <= name.first and name.last <= m.last and ((m.first, -m.last, m.name) < (name.first, -name.last,
               name.name)) for m in merged):  # of two files with one range, the first by name stays
            blobs.delete(name.name)
            log(f"deleted {name.name}: a compacted file of this machine holds its rows")
        else:
            left.append(name)
    return left


def _covered(ranges: list[tuple[int, int]], first: int, last: int) -> bool:
    """Whether every number from ``first`` to ``last`` is in one of ``ranges``."""
    need = first
    for lo, hi in sorted(ranges):
        if lo > need:
            break
        need = max(need, hi + 1)
        if need > last:
            return True
    return False


def _home_id(conn) -> str:
    """This data home's writer id (made on its first sync): two machines with one host name stay apart."""
    row = fetch_one(conn, "SELECT value FROM meta WHERE key = 'sync_id'")
    if row:
        return row[0]
    new = secrets.token_hex(6)
    conn.execute("INSERT INTO meta VALUES ('sync_id', ?) ON CONFLICT DO NOTHING", [new])
    return fetch_one(conn, "SELECT value FROM meta WHERE key = 'sync_id'")[0]


@contextlib.contextmanager
def _lock(path: Path, wait_sec: float = LOCK_WAIT_SEC) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_sec
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SyncBusy(f"another sync of {path.parent} is still running (waited {wait_sec:.0f}s)") \
                        from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
