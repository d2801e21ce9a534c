"""`push`: send this machine's packs that the team bucket does not have yet, then one manifest naming them.

Contract:
- Which packs: the live packs of the local archive not yet recorded in ``pushed_packs`` for this
  bucket, at most `PACKS_PER_MANIFEST` per manifest (a push sends as many manifests as it needs).
- Order: the manifest is journaled on local disk first (``push-pending.json`` in the home), then
  every pack is created with put-if-absent (streamed from its file: one pack's read buffer in
  memory, whatever the sizes), then the manifest itself, then ``pushed_packs`` is updated and the
  journal removed. A push killed anywhere is completed by the next one, which finds the journal
  and re-sends the same manifest under the same name; a pack already in the bucket (sent before
  the kill, or by another machine: same key, same bytes) is not sent again. Nothing is duplicated.
- A journaled pack that is gone locally and not in the bucket (local GC consolidated and swept it
  before the push completed) drops that manifest: its content is in the consolidated pack, which
  the same push sends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from resources.archive.pack_files import BucketPackFiles
from resources.archive.packs import PackStore
from resources.objectstore.location import StorageLocation
from resources.team.manifests import PACKS_PREFIX, Manifest, PackEntry, new_manifest, parse_manifest

PACKS_PER_MANIFEST = 500
JOURNAL = "push-pending.json"


def push(store: PackStore, team: StorageLocation, user: str, machine: str, journal_dir: Path | str,
         log: Callable[[str], None] = lambda _msg: None) -> dict:
    """Push everything not yet pushed; returns ``{manifests, packs_sent, packs_present, bytes_sent, dropped}``."""
    bucket = team.blobs()
    packs = team.child(PACKS_PREFIX).blobs()
    journal = Path(journal_dir) / JOURNAL
    report = {"manifests": [], "packs_sent": 0, "packs_present": 0, "bytes_sent": 0, "dropped": []}
    if journal.exists():
        pending = json.loads(journal.read_text())
        manifest = parse_manifest(pending["name"], pending["manifest"].encode())
        log(f"completing the interrupted push {manifest.name}")
        _complete(store, bucket, packs, team.uri, manifest, journal, report, log)
    while True:
        entries = _unpushed(store, team.uri)
        if not entries:
            return report
        manifest = new_manifest(user, machine, entries)
        _write_journal(journal, manifest)
        _complete(store, bucket, packs, team.uri, manifest, journal, report, log)


def _unpushed(store: PackStore, remote: str) -> list[PackEntry]:
    with store.state.connect() as conn:
        rows = conn.execute(
            """SELECT pack_key, repo, bytes FROM packs p WHERE state = 'live' AND NOT EXISTS
                 (SELECT 1 FROM pushed_packs d WHERE d.remote = ? AND d.pack_key = p.pack_key)
               ORDER BY created_at, pack_key LIMIT ?""", [remote, PACKS_PER_MANIFEST]).fetchall()
    return [PackEntry(key, repo, int(nbytes)) for key, repo, nbytes in rows]


def _complete(store: PackStore, bucket, packs, remote: str, manifest: Manifest, journal: Path, report: dict,
              log) -> None:
    for entry in manifest.packs:
        name = BucketPackFiles.name(entry.key)
        try:
            with store.files.open(entry.key) as f:
                created = packs.put_fileobj_if_absent(name, f)
        except FileNotFoundError:
            if packs.exists(name):
                created = False
            else:
                log(f"{manifest.name}: pack {entry.key} is no longer in the local archive; the push goes on "
                    "without this manifest (its content is in a newer pack)")
                report["dropped"].append(manifest.name)
                journal.unlink()
                return
        if created:
            report["packs_sent"] += 1
            report["bytes_sent"] += entry.bytes
        else:
            report["packs_present"] += 1
    bucket.put_bytes_if_absent(manifest.name, manifest.to_json())
    now = datetime.now(UTC)
    with store.state.connect() as conn:
        conn.executemany("INSERT INTO pushed_packs VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         [[remote, e.key, manifest.name, now] for e in manifest.packs])
    journal.unlink()
    report["manifests"].append(manifest.name)
    log(f"pushed {manifest.name}: {len(manifest.packs)} packs")


def _write_journal(journal: Path, manifest: Manifest) -> None:
    journal.parent.mkdir(parents=True, exist_ok=True)
    temp = journal.with_name(f".{journal.name}.tmp")
    with open(temp, "w") as f:
        json.dump({"name": manifest.name, "manifest": manifest.to_json().decode()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, journal)
