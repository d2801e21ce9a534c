"""``sessionlake push [--json]``: send this machine's archive to the team bucket (SESSIONLAKE_TEAM_URI).

Sends every pack the bucket does not have yet (put-if-absent, by content key) and a manifest naming
them with this machine's user and name (SESSIONLAKE_USER, SESSIONLAKE_MACHINE). Idempotent and
resumable: run it as often as you like, and again after a kill. Run it after an ingest, which is
what archives new session files: ``sessionlake ingest && sessionlake push``.

Exit status: 0 when everything is in the bucket, 1 when the bucket refused a write part-way (run it
again), 2 when no team bucket is configured, a name is unusable or the bucket cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli import exits
from pipelines.cli.options import description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="send new packs and a manifest to the team bucket (SESSIONLAKE_TEAM_URI)",
                       description=description(__doc__))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from resources.archive.packs import PackStore
    from resources.config.settings import Settings
    from resources.objectstore.location import StorageUnavailable, StorageUriError
    from resources.team.manifests import ManifestError, check_label
    from resources.team.push import push

    try:
        settings = Settings.from_env()
        if settings.team is None:
            print("sessionlake push: no team bucket: set SESSIONLAKE_TEAM_URI=s3://BUCKET/PREFIX "
                  "(and the AWS_* variables to reach it)", file=sys.stderr)
            return exits.BAD_USAGE
        check_label("user", settings.user)
        check_label("machine", settings.machine)
    except (StorageUriError, ManifestError) as exc:
        print(f"sessionlake push: {exc}", file=sys.stderr)
        return exits.BAD_USAGE
    log = (lambda _m: None) if args.json else (lambda m: print(m, flush=True))
    try:
        settings.check_storage()
        settings.team.blobs().check()
        report = push(PackStore.from_settings(settings), settings.team, settings.user, settings.machine,
                      settings.home, log)
    except StorageUnavailable as exc:
        print(f"sessionlake push: {exc}", file=sys.stderr)
        return exits.BAD_USAGE
    except Exception as exc:  # the bucket or the network: nothing is lost, the next push goes on from here
        print(f"sessionlake push: {type(exc).__name__}: {exc}; nothing is lost, run it again", file=sys.stderr)
        return exits.FAILED
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['packs_sent']} packs sent ({report['bytes_sent']:,} bytes), {report['packs_present']} "
              f"already in {settings.team.uri}, {len(report['manifests'])} manifests")
    return exits.DONE
