"""The ``sessionlake`` console script.

Each command lives in ``pipelines/cli/<command>.py`` (module name = command name) with
``register(subparsers)`` that adds its parser and sets ``handler``; only the module of the command
being run is imported. Handlers import their heavy dependencies (Dagster, LanceDB, DuckDB)
inside the function, so a hot-path command such as ``capture`` starts in milliseconds.

Exit statuses are `pipelines.cli.exits`. A setting that cannot be used (`resources.config.settings.SettingError`:
a bad ``SESSIONLAKE_*`` value or storage URI) or a storage bucket that cannot be reached (`StorageUnavailable`)
ends any command with one line on stderr naming what to fix, and `exits.BAD_USAGE`; a project name that
matches nothing (`UnknownProject`) with one line naming the closest, and `exits.FAILED`. A failure of the
environment (a full disk, a held warehouse, a lost server or bucket: `resources.environment`) is one line
and `exits.BAD_USAGE`; ``--debug`` anywhere in the command, or ``SESSIONLAKE_DEBUG=1``, shows its traceback.
Bad usage is reported under the usage line of the (sub)command it belongs to. Before a command runs,
the data home is made private (`resources.config.private_home.make_private`), unless its parser sets
``manages_home=True``: ``capture`` does it itself, inside its own error handling (a hook must never see
exit 2), and ``demo`` uses a home of its own.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pipelines.cli import exits
from pipelines.cli.projects import UnknownProject
from resources.config.errors import StorageUnavailable
from resources.config.private_home import make_private
from resources.config.settings import SettingError, Settings

COMMAND_MODULES = (
    "archive",
    "capture",
    "demo",
    "dev",
    "ingest",
    "maintain",
    "mcp",
    "memory",
    "prices",
    "push",
    "recall",
    "restore",
    "show",
    "statusline",
    "sync",
    "usage",
)


def build_parser(commands: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionlake",
        description="Keep every AI coding-agent session: usage warehouse, searchable memory, byte-exact archive.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"pipelines.cli.{name}").register(sub)
    return parser


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print sessionlake's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"sessionlake {version('sessionlake')}")
        except PackageNotFoundError:
            print("sessionlake (not installed: run from a source tree)")
        parser.exit()


NAME_OPTIONS = ("-p", "--project", "--session", "--session-id")
"""Options whose values are project or session names, which start with "-" (``-Users-me-repo``)."""

NAME_METAVAR = "PROJECT"
"""A command's positionals with this metavar are project names, which start with "-" too."""


def join_dash_values(argv: list[str], parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Let names that start with "-" through argparse, which would read them as options.

    ``--project -Users-me-repo`` becomes ``--project=-Users-me-repo``. With ``parser``, a command whose
    positionals are PROJECT names gets its options first and its names after one ``--``: in
    ``archive gc -Users-me-app --json`` or ``restore -- -home-me-app --to DIR``, an argument that starts
    with a single "-" and is not one of the command's options is a name, wherever it stands.
    """
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in NAME_OPTIONS:
            value = next(args, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out if parser is None else _names_last(out, parser)


def _command(argv: list[str], parser: argparse.ArgumentParser) -> tuple[int, argparse.ArgumentParser]:
    """How many of ``argv``'s first words name (sub)commands, and the parser of the last one."""
    depth, command = 0, parser
    while depth < len(argv) and (choices := _subcommands(command)) and argv[depth] in choices:
        command = choices[argv[depth]]
        depth += 1
    return depth, command


def _names_last(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    depth, command = _command(argv, parser)
    if not any(a.metavar == NAME_METAVAR and not a.option_strings for a in command._actions):
        return argv
    takes_value = {s: a.nargs != 0 for a in command._actions for s in a.option_strings}
    options: list[str] = []
    names: list[str] = []
    value_pending = False
    for arg in argv[depth:]:
        if value_pending:
            options.append(arg)
            value_pending = False
        elif arg == "--":
            continue
        elif arg.split("=", 1)[0] in takes_value or (arg.startswith("--") and arg != "--"):
            options.append(arg)  # an unknown --option stays one, for argparse to reject
            value_pending = takes_value.get(arg, False)
        else:
            names.append(arg)
    return argv[:depth] + options + (["--", *names] if names else [])


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _make_home_private() -> None:
    """The entry point's one change to the process: umask 0o077 and the data home created 0700.
    A home that cannot be created is a `SettingError` naming SESSIONLAKE_HOME (one line, exit 2)."""
    settings = Settings.from_env(check_uris=False)
    try:
        make_private(settings)
    except OSError as exc:
        raise SettingError(f"SESSIONLAKE_HOME={str(settings.home)!r} cannot be used as the data home: "
                           f"{exc.strerror or exc}") from exc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("SESSIONLAKE_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    # Import only the command being run, so `capture` does not pay for the others' imports.
    only = (argv[0],) if argv and argv[0] in COMMAND_MODULES else () if argv == ["--version"] else COMMAND_MODULES
    parser = build_parser(only)
    args, extra = parser.parse_known_args(join_dash_values(argv, parser))
    command = _command(argv, parser)[1]
    if extra and not getattr(args, "accepts_unknown", False):  # statusline prints a line whatever it is given
        command.error(f"unrecognized arguments: {' '.join(extra)}")  # under the command's usage line
    args.unknown = extra
    args.debug = debug
    try:
        if not getattr(args, "manages_home", False):
            _make_home_private()
        return int(args.handler(args) or exits.DONE)
    except (SettingError, StorageUnavailable) as exc:  # the user's setting, not a bug: one line, no traceback
        print(f"{command.prog}: {exc}", file=sys.stderr)
        return exits.BAD_USAGE
    except UnknownProject as exc:
        print(f"{command.prog}: {exc}", file=sys.stderr)
        return exits.FAILED
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say, and nothing went wrong
        return exits.DONE
    except Exception as exc:  # a full disk, a lost server: one line naming it (--debug: the traceback)
        from resources.environment import environment_failure

        line = None if debug else environment_failure(exc)
        if line is None:
            raise
        print(f"{command.prog}: {line}", file=sys.stderr)
        return exits.BAD_USAGE


if __name__ == "__main__":
    from pipelines.cli.process_exit import console_script

    console_script(main)
