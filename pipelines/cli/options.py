"""The options several commands share, spelled and meant the same everywhere.

- ``-p/--project NAME`` (repeatable): only these projects, each resolved by
  `pipelines.cli.projects.resolve_projects` (folder name, leading "-" optional). Commands that took
  projects as positionals still take them, unlisted.
- ``--session ID``: the one session the command is about (its id, or where a command knows keys, its key).

Old spellings stay accepted and unlisted (`hidden_alias`), so scripts written for them keep working.
"""

from __future__ import annotations

import argparse


def positive(kind: type = int):
    """An argparse ``type``: a number of ``kind`` greater than 0, else a usage error naming the value."""
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number
    return parse


def add_project_option(parser: argparse.ArgumentParser, help: str, *, positionals: bool = False) -> None:
    """``-p/--project`` (repeatable, default ``[]``) with ``help``; ``positionals``: also PROJECT names
    as positionals, unlisted (read both with `project_names`)."""
    parser.add_argument("-p", "--project", action="append", default=[], metavar="PROJECT",
                        help=f"{help} (repeatable; a folder name, the leading '-' may be left out)")
    if positionals:
        parser.add_argument("projects", nargs="*", metavar="PROJECT", help=argparse.SUPPRESS)


def project_names(args: argparse.Namespace) -> list[str]:
    """The project names given, as ``--project`` and as positionals."""
    return [*args.project, *getattr(args, "projects", [])]


def add_session_option(parser: argparse.ArgumentParser, help: str, *, old: tuple[str, ...] = (), **kwargs) -> None:
    """``--session ID`` with ``help``, stored as ``args.session``; ``old`` spellings are hidden aliases."""
    parser.add_argument("--session", metavar="ID", help=help, **kwargs)
    if old:
        hidden_alias(parser, *old, dest="session", **kwargs)


def hidden_alias(parser: argparse.ArgumentParser, *flags: str, dest: str, **kwargs) -> None:
    """Accept ``flags`` for ``dest`` without listing them in ``--help`` (the listed option sets the default)."""
    kwargs.pop("default", None)
    parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def description(doc: str | None, part: int = 0) -> str:
    """Paragraph ``part`` of a command module's docstring as ``--help`` shows it: without reST's double
    backticks, which a terminal prints as they are."""
    return (doc or "").split("\n\n")[part].replace("``", "")
