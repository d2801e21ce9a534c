"""The ``sessionlake`` console script.

Each command group lives in ``pipelines/commands/<group>.py`` with ``register(subparsers)`` that adds
its parser and sets ``handler``. Handlers import their heavy dependencies (Dagster, LanceDB, DuckDB)
inside the function, so a hot-path command such as ``capture`` starts in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "capture",
    "demo",
    "dev",
    "ingest",
    "usage",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionlake",
        description="Keep every AI coding-agent session: usage warehouse, searchable memory, byte-exact archive.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
