"""Project names on the command line: the one resolver behind every command's ``--project``.

A project is its folder name as the agent writes it (Claude Code: ``-Users-me-repo``); the leading
"-" may be left out. A name that matches no known project is `UnknownProject`, which
`pipelines.cli.main.main` prints in one line with the closest known names and ends with
`exits.FAILED` (nothing found), whichever command was asked.
"""

from __future__ import annotations

from collections.abc import Iterable


class UnknownProject(LookupError):
    """Names on the command line that match no known project; the message is the line the user sees."""


def resolve_projects(names: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """The known project each of ``names`` means (as written, or with a leading "-"), in order, once each.

    ``what`` says what is missing in the message (``usage``, ``archive``, ``memory``):
    ``no usage for project 'x'; closest: -a, -b``.
    """
    known = sorted(set(known))
    lookup = set(known)
    resolved, unknown = [], []
    for name in names:
        match = next((candidate for candidate in (name, f"-{name}") if candidate in lookup), None)
        if match is None:
            unknown.append(name)
        elif match not in resolved:
            resolved.append(match)
    if unknown:
        raise UnknownProject(f"no {what} for project {', '.join(map(repr, unknown))}; {closest(unknown[0], known)}")
    return resolved


def closest(name: str, known: list[str], n: int = 3) -> str:
    """``"closest: a, b, c"`` (the ``n`` known names most like ``name``), or a note that none are known."""
    import difflib

    if not known:
        return "none are known yet (run sessionlake ingest)"
    return "closest: " + ", ".join(difflib.get_close_matches(name, known, n=n, cutoff=0.0))
