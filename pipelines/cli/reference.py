"""The command-line reference page of the manual, generated from the parsers themselves.

``python -m pipelines.cli.reference > docs/cli.md`` rewrites it; a test fails when the page and the parsers
disagree, so every command, subcommand and option on the page is one the program accepts.
"""

from __future__ import annotations

import argparse
import os

WIDTH = "100"

INTRO = """# Command line

Every command is `sessionlake COMMAND [SUBCOMMAND] [OPTIONS]`; `sessionlake COMMAND --help` prints the same
text as this page. Exit status, for every command: 0 done; 1 done with failures, or nothing found; 2 bad
usage, configuration or environment (the reason is one line on stderr).
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _sections(parser: argparse.ArgumentParser, path: list[str], level: int) -> list[str]:
    out = [f"{'#' * level} `{' '.join(path)}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    seen: set[int] = set()
    for name, sub in _subcommands(parser).items():
        if id(sub) in seen:  # an alias names a parser already shown
            continue
        seen.add(id(sub))
        out += _sections(sub, [*path, name], min(level + 1, 4))
    return out


def render() -> str:
    """The page as Markdown: the top-level help, then each command and its subcommands, in order."""
    from pipelines.cli.main import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps help to the terminal's width; the page has a fixed one
    try:
        parser = build_parser()
        lines = [INTRO, "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subcommands(parser).items():
            lines += _sections(sub, ["sessionlake", name], 2)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
