"""Source adapters, one per agent (see `resources.sources.base`): which exist, which are found, and
which one a session key belongs to."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resources.config.settings import Settings
    from resources.ingest.session_files import SessionFile
    from resources.sources.base import Source

AGENTS = ("claude", "codex", "gemini", "opencode", "qwen")
"""Every agent, in ccusage's order. Naming a session's agent (`agent_of`: every recall hit) imports
no adapter; `source_types` does, and holds one adapter per name."""


_CLASSES = {"claude": "ClaudeSource", "codex": "CodexSource", "gemini": "GeminiSource",
            "opencode": "OpenCodeSource", "qwen": "QwenSource"}
"""The adapter class of each agent, in the module ``resources.sources.<agent>``."""


@functools.cache
def source_types() -> dict[str, type[Source]]:
    """``{agent: its Source class}``, in `AGENTS` order."""
    types = {cls.agent: cls for cls in map(_source_class, AGENTS)}
    if tuple(types) != AGENTS:
        raise RuntimeError(f"the adapters name agents {tuple(types)}, AGENTS names {AGENTS}")
    return types


def agent_of(session_key: str) -> str:
    """The agent of a session key: ``<agent>:...`` for every agent but Claude Code, whose keys (its
    project folder names never hold a ``:``) are unchanged."""
    head, sep, _ = session_key.partition(":")
    return head if sep and head in AGENTS else "claude"


def source_type(session_key: str) -> type[Source]:
    return source_types()[agent_of(session_key)]


def path_under_root(session_key: str) -> str:
    """The path of a session key's file under its agent's root (`Source.key` inverted)."""
    return session_key if agent_of(session_key) == "claude" else session_key.partition(":")[2]


def found_sources(settings: Settings) -> list[Source]:
    """A source for each folder of each agent that is a folder (`Settings.all_agent_roots`, in
    ccusage's order); a missing one is skipped."""
    return [_source_class(agent)(root) for agent, root in settings.all_agent_roots() if root.is_dir()]


def _source_class(agent: str) -> type[Source]:
    """One agent's adapter; only its module is imported (a home with Claude Code's folder alone loads no
    other adapter: about 2 ms of a report)."""
    return getattr(importlib.import_module(f"resources.sources.{agent}"), _CLASSES[agent])


def walk_all(sources: list[Source], projects: set[str] | None = None) -> Iterator[SessionFile]:
    """Every session file of every source (of ``projects`` when given). Two folders of one agent that
    hold a file at the same path under them (a copy) give it once: the first folder's. One source (the
    usual home) is passed through: its walk yields each key once, and the set costs 15 ms at 20,000 files."""
    if len(sources) == 1:
        return sources[0].walk(projects)
    return _first_of_each_key(sources, projects)


def _first_of_each_key(sources: list[Source], projects: set[str] | None) -> Iterator[SessionFile]:
    seen: set[str] = set()
    for source in sources:
        for file in source.walk(projects):
            if file.key not in seen:
                seen.add(file.key)
                yield file
