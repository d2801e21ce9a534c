"""The names a usage report is asked with: reports, per-agent views, orders, weekdays.

Kept apart from `resources.usage.reports` (which imports DuckDB), so the command line can check a
report's options, and print a stored one, without loading it.
"""

from __future__ import annotations

REPORTS = ("daily", "weekly", "monthly", "session", "project", "model", "branch", "user", "machine", "blocks")
PERIOD_REPORTS = ("daily", "weekly", "monthly")
VIEWS = ("all", "claude", "codex", "gemini", "opencode", "qwen")
AGENT_REPORTS = {"claude": ("daily", "weekly", "monthly", "session", "blocks"),
                 "codex": ("daily", "monthly", "session"), "gemini": ("daily", "monthly", "session"),
                 "opencode": ("daily", "weekly", "monthly", "session"), "qwen": ("daily", "monthly", "session")}
"""The reports of each agent's own view (``ccusage codex daily``, ...): the view of every agent but
``all`` holds that agent's rows only, in the JSON ccusage 20 prints for that agent."""
ORDERS = ("asc", "desc")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""In ISO order (``isodow`` 1-7)."""
DEFAULT_START_OF_WEEK = {"all": "monday", "opencode": "monday"}
"""What ccusage 20.0.24 does: ``ccusage weekly`` and ``ccusage opencode weekly`` start weeks on Monday,
``ccusage claude weekly`` on Sunday."""
