"""The exit status of every ``sessionlake`` command, defined once.

- `DONE` (0): the command did what was asked.
- `FAILED` (1): it ran, but something failed (a file, a pack, a table; the others are still done),
  or there was nothing to find (an unknown project or session, a model with no price).
- `BAD_USAGE` (2): it could not start: bad usage (an unknown option, a missing argument), a setting
  that cannot be used, or an environment that is not there (an unreachable bucket or server, a
  missing library, no sessions to read).

Handlers return one of these; `pipelines.cli.main.main` maps the errors it catches onto them.
"""

DONE = 0
FAILED = 1
BAD_USAGE = 2
INTERRUPTED = 130
"""Ctrl-C or SIGTERM, as a shell reports a process ended by SIGINT."""
