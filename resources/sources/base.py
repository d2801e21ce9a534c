"""What a source adapter is: one agent's files in, normalized usage rows and memory items out.

A source walks its agent's root and yields `SessionFile`s whose ``key`` is unique across agents
(Claude Code's keys are the path under its projects folder, unchanged; every other agent's key is
``<agent>:<path under its root>``) and whose ``project`` is the partition key (Claude Code: the
project folder; others: ``<agent>:<project>``). Parsing is per file and needs only the path, and
for a source that ``reads_tree`` the other files of its tree around it.

Usage rows are warehouse rows (resources/usage/warehouse.py ``usage_schema()``) in one normal form:
``input_tokens`` is input not read from cache, ``cache_read_tokens`` the cached input,
``cache_creation_tokens`` cache writes, ``output_tokens`` the output as the agent reports it, and
``extra_output_tokens`` output it reports apart from that (Gemini's thoughts, OpenCode's reasoning;
Codex's reasoning is inside its output and is not repeated), billed at the output rate and counted
in ``totalTokens`` but not in ``outputTokens``, as ccusage does; ``reasoning_output_tokens`` is the
part of ``output_tokens`` an agent reports as reasoning (Codex), shown apart and never added again.
Each row has a stable ``dedup_key``, so reading a file again (rewritten in place, or from byte 0) never counts twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from resources.ingest.session_files import ParseStats, SessionFile
from resources.times import parse_iso

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def project_name(agent: str, cwd: str | None, fallback: str) -> str:
    """``<agent>:<cwd encoded as Claude Code names its project folders>`` (every character that is
    not a letter or digit becomes ``-``: ``/home/me/app`` -> ``-home-me-app``), or
    ``<agent>:<fallback>`` without a cwd. The result is a valid Dagster partition key."""
    name = _NOT_ALNUM.sub("-", cwd) if cwd else _NOT_ALNUM.sub("-", fallback)
    return f"{agent}:{name}"


class MemoryItem(NamedTuple):
    """One line or message of a transcript, as the memory processor sees it.

    ``id``/``parent`` thread the conversation (``parent`` None: a root); ``record`` is set for a
    prompt or answer: ``{role, text, session_id, timestamp, model, git_branch}``; ``summary`` is
    ``(leaf id, text)`` for a summary line. ``offset`` is where the item starts in the file.
    """

    offset: int
    id: str | None = None
    parent: str | None = None
    session_id: str | None = None
    record: dict | None = None
    summary: tuple[str | None, str] | None = None


class UsageItem(NamedTuple):
    """A usage row, its de-duplication key and its best-copy rank (higher wins). The row is a dict of its
    columns' values, or an object with the row's ``model`` and a ``json()`` that encodes it as the staging reads
    it (`resources.sources.claude_usage_lines.Row`)."""

    key: str
    rank: tuple[int, int]
    row: dict


def usage_row(*, agent: str, dedup_key: str, ts: datetime, session_id: str | None, session_key: str,
              project: str, model: str | None, input_tokens: int, output_tokens: int,
              cache_creation_tokens: int = 0, cache_read_tokens: int = 0, extra_output_tokens: int = 0,
              cost_usd: float | None = None, cwd: str | None = None, git_branch: str | None = None,
              message_id: str | None = None, request_id: str | None = None, line_offset: int = 0,
              is_sidechain: bool = False, agent_id: str | None = None, cache_creation_1h_tokens: int = 0,
              reasoning_output_tokens: int = 0) -> dict:
    """A complete warehouse row (see the module doc for what each count means)."""
    return {
        "dedup_key": dedup_key, "message_id": message_id, "request_id": request_id, "ts": ts,
        "session_id": session_id, "session_key": session_key, "project": project, "model": model,
        "git_branch": git_branch, "cwd": cwd, "is_sidechain": is_sidechain, "agent_id": agent_id,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_creation_tokens": cache_creation_tokens, "cache_read_tokens": cache_read_tokens,
        "cache_creation_1h_tokens": cache_creation_1h_tokens, "cost_usd": cost_usd, "line_offset": line_offset,
        "agent": agent, "extra_output_tokens": extra_output_tokens,
        "reasoning_output_tokens": reasoning_output_tokens,
    }


def count(value) -> int:
    """A token count from a file: a non-negative int, anything else (absent, null, a string) 0."""
    return value if value.__class__ is int and value > 0 else 0


def parse_time(value) -> datetime | None:
    """An ISO-8601 string or epoch milliseconds as an aware UTC time; None if it is neither."""
    if value.__class__ is str:
        return parse_iso(value)
    if value.__class__ in (int, float) and 0 < value < 1e14:
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


class Source:
    """One agent's files under ``root``. Subclasses set ``agent`` and implement the three methods.

    ``append_only``: a grown file only gained lines at its end (its tail before the stored offset is
    unchanged), so it may be read from where the last read stopped; otherwise every change is read
    from byte 0 and the stable row ids do the de-duplication.

    ``reads_tree``: reading a file also reads other files of the tree, found by their paths relative
    to it (OpenCode's part files name their message and session files). Such a file read away from
    its tree (a version from the archive) must lie at its path under the root, among the other files.
    """

    agent: str = ""
    append_only: bool = False
    reads_tree: bool = False

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, path: Path | str) -> str:
        """The session key of a file under the root."""
        return f"{self.agent}:{Path(path).relative_to(self.root).as_posix()}"

    def walk(self, projects: set[str] | None = None) -> Iterator[SessionFile]:
        raise NotImplementedError

    @classmethod
    def usage(cls, path: Path, session_key: str, project: str, start_offset: int,
              stats: ParseStats) -> Iterator[UsageItem]:
        raise NotImplementedError

    @classmethod
    def memory(cls, path: Path, session_key: str, project: str, start_offset: int,
               stats: ParseStats) -> Iterator[MemoryItem]:
        raise NotImplementedError
