"""``sessionlake archive verify|gc|ls``: check, consolidate and list the content-addressed archive."""

from __future__ import annotations

import argparse
import json

from pipelines.cli.options import add_project_option, description, project_names
from pipelines.cli.table import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="verify, garbage-collect or list the session archive (packs)",
                       description=description(__doc__))
    actions = p.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="re-hash every pack and check that every index row resolves",
                                description="Re-hash every pack and check that every index row resolves to one. "
                                            "Exit 1 when a problem is found.")
    add_project_option(verify, "only this project (default: every project)", positionals=True)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=run_verify, parser=verify)
    gc = actions.add_parser("gc", help="consolidate each project's packs into one, then sweep old tombstones",
                            description="Consolidate each project's packs into one, then delete packs tombstoned "
                                        "long enough ago. Exit 1 when a project failed (the others are done).")
    add_project_option(gc, "only this project (default: every project)", positionals=True)
    gc.add_argument("--json", action="store_true", help="print the gc_repo results as JSON")
    gc.set_defaults(handler=run_gc, parser=gc)
    ls = actions.add_parser("ls", help="list projects; with --project, its packs and session versions",
                            description="List the archived projects; with --project, that project's packs and "
                                        "session versions.")
    add_project_option(ls, "list this project's packs and session versions", positionals=True)
    ls.add_argument("--json", action="store_true", help="print as JSON")
    ls.set_defaults(handler=run_ls, parser=ls)


def _store():
    from resources.archive.packs import PackStore
    from resources.config.settings import Settings

    settings = Settings.from_env()
    settings.check_storage()
    return PackStore.from_settings(settings)


def resolve_projects(store, names: list[str]) -> list[str]:
    """Archived project names for ``names`` (see `pipelines.cli.projects.resolve_projects`)."""
    from pipelines.cli.projects import resolve_projects as resolve

    return resolve(names, store.repos(), "archive") if names else []


def run_verify(args: argparse.Namespace) -> int:
    store = _store()
    projects = resolve_projects(store, project_names(args))
    report = store.verify(projects or None)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for p in report["problems"]:
            print(f"FAILED {p['pack']} ({p['repo']}): {p['problem']}")
        status = "ok" if report["ok"] else f"{len(report['problems'])} problem(s)"
        print(f"{status}: {report['packs_checked']} packs re-hashed ({report['bytes_checked']:,} bytes), "
              f"{report['index_rows']} index rows, {report['snapshots']} versions")
    return 0 if report["ok"] else 1


def run_gc(args: argparse.Namespace) -> int:
    from resources.archive.pack_format import PackError

    store = _store()
    projects = resolve_projects(store, project_names(args))
    results, failed = [], False
    for project in projects or store.repos():
        try:
            results.append(store.gc_repo(project))
        except PackError as exc:  # a damaged pack stops that project only; the others go on
            failed = True
            results.append({"repo": project, "error": str(exc)})
    swept = store.sweep()
    if args.json:
        print(json.dumps({"results": results, "sweep": swept}, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['repo']}: FAILED {r['error']}")
            else:
                print(f"{r['repo']}: {r['packs_before']} -> {r['packs_after']} live packs"
                      f"{' (skipped)' if r['skipped'] else ''}, key {r['consolidated_key']}")
        print(f"swept {swept['tombstoned_deleted']} tombstoned and {swept['orphans_deleted']} orphan packs, "
              f"{swept['temp_deleted']} temp files ({swept['bytes_freed']:,} bytes)")
    return 1 if failed else 0


def run_ls(args: argparse.Namespace) -> int:
    names = project_names(args)
    if len(names) > 1:
        args.parser.error("ls lists one project at a time")
    store = _store()
    if not names:
        rows = [{"project": r, **store.repo_stats(r)} for r in store.repos()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _table(("project", "live_packs", "pack_bytes", "objects", "sessions", "versions", "dedup_ratio",
                    "compression_ratio"), rows)
        return 0
    [project] = resolve_projects(store, names)
    packs = store.live_packs(project, include_tombstoned=True)
    sessions: dict[str, dict] = {}
    for v in store.versions(project):
        entry = sessions.setdefault(v.snapshot.session_key, {"session": v.snapshot.session_key, "versions": 0})
        entry.update(versions=entry["versions"] + 1, size=v.snapshot.size, file_hash=v.snapshot.file_hash,
                     archived_at=v.archived_at.isoformat(timespec="seconds"))
    for seen in store.timeline(project):  # the version last seen on disk (A after A -> B -> A), as restore has it
        sessions[seen.snapshot.session_key].update(size=seen.snapshot.size, file_hash=seen.snapshot.file_hash)
    origins = store.origins(project)
    for entry in sessions.values():  # who it comes from: a machine that pushed it, or this one
        entry["machine"] = origins.get((entry["session"], entry["file_hash"]), "(this machine)")
    if args.json:
        print(json.dumps({"packs": packs, "sessions": list(sessions.values())}, indent=2, default=str))
        return 0
    _table(("key", "state", "bytes", "object_count", "snapshot_count", "created_at"),
           [{**p, "created_at": p["created_at"].isoformat(timespec="seconds")} for p in packs])
    print()
    _table(("session", "machine", "versions", "size", "archived_at"), list(sessions.values()))
    return 0


def _table(cols: tuple[str, ...], rows: list[dict]) -> None:
    print(format_table(cols, [[r[c] for c in cols] for r in rows]))
