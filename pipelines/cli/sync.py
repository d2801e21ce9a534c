"""``sessionlake sync``: this machine's usage to SESSIONLAKE_SYNC_URI, every other machine's into the warehouse.

Reads the sessions on disk (usage only, no Dagster), pulls every other machine's new sync files into
the local warehouse, and pushes this machine's new usage rows: models, token counts, cost, times,
agent, session and message ids, project names (``SESSIONLAKE_SYNC_PROJECTS=hash``: a keyed hash).
Never a prompt, a response, a path or a credential. ``--with-transcripts`` also sends the session
archive's packs there (``sessionlake push``'s path), which hold whole transcripts, and says so; and it
takes in the packs other machines sent: their sessions join this machine's archive (``archive ls``,
``restore``) and memory (``recall``) before the command returns. Their usage comes from their sync
files only, counted once.
Set up once per machine, for instance as a Stop hook or a cron line: ``sessionlake sync --quiet``.

Exit status: 0 done; 1 done, but a file in the sync location could not be read (it is named, skipped
and tried again next time), a session file failed, or the location failed half way (run it again:
nothing is lost or counted twice); 2 no SESSIONLAKE_SYNC_URI, a bad setting or name, the location
cannot be reached, or another sync of this data home is still running.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from pipelines.cli.options import description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="sync usage with your other machines through SESSIONLAKE_SYNC_URI",
                       description=description(__doc__))
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something failed")
    p.add_argument("--with-transcripts", action="store_true",
                   help="also send the session archive (whole transcripts: prompts, responses, paths) there, "
                        "and take in the other machines' into this archive and memory")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from resources.config.errors import StorageUnavailable
    from resources.config.settings import Settings
    from resources.sync.location import sync_location
    from resources.sync.run import SyncBusy, SyncOptions, sync
    from resources.team.manifests import ManifestError, check_label

    prog = "sessionlake sync"
    settings = Settings.from_env()
    if settings.sync is None:
        print(f"{prog}: no sync location: set SESSIONLAKE_SYNC_URI to a folder every machine sees (a NAS, "
              "Dropbox or iCloud Drive folder) or to s3://BUCKET/PREFIX (with the AWS_* variables)", file=sys.stderr)
        return 2
    try:
        opts = SyncOptions(check_label("user", settings.user), check_label("machine", settings.machine),
                           settings.sync_projects, settings.sync_key.encode() if settings.sync_key else None)
    except ManifestError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    location = sync_location(settings.sync)
    blobs = location.blobs()
    blobs.check()
    if args.with_transcripts:
        settings.check_storage()
        print(f"{prog}: --with-transcripts: whole transcripts (prompts, responses, file paths) go to {settings.sync}",
              file=sys.stderr)
    say = (lambda _m: None) if args.json or args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        report = sync(settings, blobs, opts, say, transcripts=location if args.with_transcripts else None)
    except SyncBusy as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable:
        raise
    except Exception as exc:  # the bucket or the network, half way: the next sync goes on from here
        print(f"{prog}: {type(exc).__name__}: {exc}; nothing is lost, run it again", file=sys.stderr)
        return 1
    for name in report["foreign"]:
        print(f"{prog}: not a sync file, left alone: {name}", file=sys.stderr)
    for error in report["errors"]:
        print(f"{prog}: skipped {error} (tried again next sync)", file=sys.stderr)
    transcripts = report.get("transcripts", {})
    for error in transcripts.get("archive_errors", []):
        print(f"{prog}: archive: {error['file']}: {error['error']}", file=sys.stderr)
    for error in transcripts.get("received", {}).get("errors", []):
        print(f"{prog}: transcripts: {error['what']}: {error['error']} (tried again next sync)", file=sys.stderr)
    failed = bool(report["errors"] or report["ingest"]["errors"] or transcripts.get("archive_errors")
                  or transcripts.get("received", {}).get("errors"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif not args.quiet:
        print(summary(report, settings.sync))
        if "transcripts" in report:
            t = report["transcripts"]
            r = t["received"]
            print(f"transcripts: {t['packs_sent']} packs sent ({t['bytes_sent']:,} bytes), {t['packs_present']} "
                  f"already there; {r['packs_received']} packs taken in ({r['bytes_received']:,} bytes) from "
                  f"{r['manifests']} push(es) of other machines: {r['versions']} session versions, "
                  f"{r['records']:,} memory records")
        print(machines_line(report["machines"]), file=sys.stderr)
    return 1 if failed else 0


def summary(report: dict, where: str) -> str:
    machines = {m["source"] for m in report["machines"]}
    return (f"pulled {report['pulled_rows']:,} responses in {report['pulled_files']} file(s); "
            f"pushed {report['pushed_rows']:,} responses ({report['pushed_bytes']:,} bytes) to {where}; "
            f"{len(machines)} other machine(s)")


def machines_line(machines: list[dict], now: datetime | None = None) -> str:
    """``synced machines: bob@desk 2h ago (2026-12-04 18:03 UTC), ...``, or that there are none yet."""
    if not machines:
        return "synced machines: none yet besides this one"
    now = now or datetime.now(UTC)
    parts = [f"{m['user']}@{m['machine']} {_ago(now - m['last_synced'])} "
             f"({m['last_synced'].astimezone(UTC):%Y-%m-%d %H:%M} UTC)" for m in machines]
    return "synced machines: " + ", ".join(parts)


def _ago(delta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"
