"""The ``sessionlake`` console script.

Each command lives in ``pipelines/commands/<command>.py`` (module name = command name) with
``register(subparsers)`` that adds its parser and sets ``handler``; only the module of the command
being run is imported. Handlers import their heavy dependencies (Dagster, LanceDB, DuckDB)
inside the function, so a hot-path command such as ``capture`` starts in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "archive",
    "capture",
    "demo",
    "dev",
    "ingest",
    "maintain",
    "memory",
    "recall",
    "restore",
    "usage",
)


def build_parser(commands: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionlake",
        description="Keep every AI coding-agent session: usage warehouse, searchable memory, byte-exact archive.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"pipelines.commands.{name}").register(sub)
    return parser


NAME_OPTIONS = ("--project", "--session", "--session-id")
"""Options whose values are project or session names, which start with "-" (``-Users-me-repo``)."""


def join_dash_values(argv: list[str]) -> list[str]:
    """Turn ``--project -Users-me-repo`` into ``--project=-Users-me-repo`` so argparse does not read the
    name as an option."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in NAME_OPTIONS:
            value = next(args, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = join_dash_values(sys.argv[1:] if argv is None else argv)
    # Import only the command being run, so `capture` does not pay for the others' imports.
    only = (argv[0],) if argv and argv[0] in COMMAND_MODULES else COMMAND_MODULES
    args = build_parser(only).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
