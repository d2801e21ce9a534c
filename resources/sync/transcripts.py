"""``sessionlake sync --with-transcripts``: the session archives of every machine, through the sync location.

Packs hold whole transcripts (prompts, responses, tool output, paths): this is the one way anything
but usage rows leaves the machine, and only when asked. They lie beside the usage files, under
``packs/`` and ``manifests/``, in the team bucket's layout, so a central deployment can ingest them too.

- `push_transcripts` sends this machine's packs through ``sessionlake push``'s path
  (`resources.team.push`: put-if-absent packs, then a journaled manifest).
- `pull_transcripts` takes in every other machine's: for each manifest not ingested here, the packs
  this archive does not hold are copied into it (`receive_pack`: verified against their content key,
  put in place whole), then go through the team ingest (`resources.team.ingest.ingest_manifests`:
  adopted into the archive, each session version read by the runner as an ``ArchivedFile``) with the
  memory processor only. So ``archive ls`` and ``restore`` show the other machine's sessions (each
  version attributed to the user and machine whose manifest named it first, in ``team_snapshots``)
  and ``recall`` finds their text as soon as the sync returns. The usage processor does not read
  them: their usage comes from the other machine's sync files, and is counted once there.

A manifest this machine wrote (`pushed_packs`) is never read back, nor one ingested before
(``team_manifests``), and a pack taken in is then recorded as present in the location, so this
machine does not name another machine's packs in a manifest of its own. A pack or manifest that
fails (unreadable, damaged, a version the processor cannot read) is reported and not marked: the
next sync tries it again (a pack already in the archive is adopted again, which changes nothing, and
only the versions not read yet are read); the others are used. A kill before a pack is indexed leaves
at most a verified pack file with no row, which the next sync puts in place again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

from resources.archive.adoption import receive_pack
from resources.archive.pack_files import BucketPackFiles
from resources.archive.pack_format import PackError
from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.runner import run_processors
from resources.sources import found_sources, walk_all
from resources.team.ingest import ingest_manifests
from resources.team.manifests import PACKS_PREFIX, ManifestError, list_manifest_names, read_manifest
from resources.team.push import push


def push_transcripts(settings: Settings, location, user: str, machine: str,
                     log: Callable[[str], None] = lambda _m: None) -> dict:
    """Archive new session versions, then push every pack the location lacks; returns `push`'s report
    plus ``archive_errors`` (files the archive could not read: retried next time)."""
    store = PackStore.from_settings(settings)
    files = list(walk_all(found_sources(settings)))
    stats = run_processors([ArchiveProcessor(store)], settings.sessions_dir, store.state, files=files)["archive"]
    journal = settings.home / "sync-transcripts"  # apart from a team push's journal, which names another bucket
    return {**push(store, location, user, machine, journal, log), "archive_errors": stats["error_files"]}


def pull_transcripts(settings: Settings, location, log: Callable[[str], None] = lambda _m: None) -> dict:
    """Take in the other machines' packs (see the module doc); returns ``manifests`` (ingested),
    ``packs_received``, ``bytes_received``, ``versions`` (session versions read), ``records`` (memory
    records extracted) and ``errors`` (``{what, error}``: each retried next sync)."""
    from resources.ingest.processors.memory import MemoryProcessor
    from resources.memory.lance import LanceStore

    store = PackStore.from_settings(settings)
    bucket, packs = location.blobs(), location.child(PACKS_PREFIX).blobs()
    report = {"manifests": 0, "packs_received": 0, "bytes_received": 0, "versions": 0, "records": 0, "errors": []}
    with store.state.connect() as conn:
        known = {r[0] for r in conn.execute(
            "SELECT manifest FROM pushed_packs WHERE remote = ? UNION SELECT manifest FROM team_manifests",
            [location.uri]).fetchall()}
        states = dict(conn.execute("SELECT pack_key, state FROM packs").fetchall())
    manifests = []
    for name in list_manifest_names(bucket):
        if name in known:  # this machine's own, or one taken in before: not even read
            continue
        try:
            manifests.append(read_manifest(bucket, name))
        except (ManifestError, FileNotFoundError) as exc:
            report["errors"].append({"what": name, "error": str(exc)})
    todo = []
    for manifest in manifests:
        # A pack this archive consolidated away is in a live pack of its own: nothing to take in.
        entries = tuple(e for e in manifest.packs if states.get(e.key) != "tombstoned")
        try:
            for entry in entries:
                if entry.key in states:  # made or taken in here: adopting it again changes nothing
                    continue
                report["bytes_received"] += receive_pack(
                    store, entry.key, lambda f, e=entry: packs.download(BucketPackFiles.name(e.key), f))
                report["packs_received"] += 1
                states[entry.key] = "received"
        except (PackError, FileNotFoundError, OSError) as exc:
            report["errors"].append({"what": f"{manifest.name} ({manifest.user}@{manifest.machine})",
                                     "error": f"{type(exc).__name__}: {exc}"})
            continue
        todo.append(dataclasses.replace(manifest, packs=entries))
    if not todo:
        return report
    result = ingest_manifests(todo, [MemoryProcessor(LanceStore.from_settings(settings))], store)
    team, memory = result["team"], result["memory"]
    failed = {f["pack"] for f in team["failed_packs"]}
    done = [m for m in todo if not any(e.key in failed for e in m.packs)]
    report.update(manifests=len(done), versions=team["versions"], records=memory["items_extracted"])
    report["errors"] += [{"what": f["pack"], "error": f["error"]} for f in team["failed_packs"]]
    report["errors"] += [{"what": e["file"], "error": e["error"]} for e in memory["error_files"]]
    now = datetime.now(UTC)
    with store.state.connect() as conn:  # in the location already: never named in a manifest of this machine
        conn.executemany("INSERT INTO pushed_packs VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         [[location.uri, e.key, m.name, now] for m in done for e in m.packs])
    for m in todo:
        log(f"took in {m.name}: {len(m.packs)} packs from {m.user}@{m.machine}")
    return report
