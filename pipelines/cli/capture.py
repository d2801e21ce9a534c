"""``sessionlake capture``: append one record to the capture inbox and print its ULID.

It runs on the hot path of every prompt (as a Claude Code hook), so it imports only the standard
library and ``resources.capture.queue``: no Dagster, no LanceDB. Input, one of:
- a JSON object on stdin with a non-empty string ``text`` (other fields are kept);
- ``--text "..."``;
- ``--from-hook``: a Claude Code hook payload on stdin. ``UserPromptSubmit`` captures ``prompt``,
  ``Stop`` / ``SubagentStop`` capture ``last_assistant_message``; an event with nothing to capture
  exits 0 and writes nothing.
``--tier`` and ``--session`` set those fields. ``--requeue-overflow`` moves envelopes a full queue
set aside back into it. Invalid input, or an inbox that cannot be written, exits 2 with a one-line
reason on stderr and writes nothing. With ``--from-hook`` the ULID goes to stderr, because Claude Code
adds a UserPromptSubmit hook's stdout to the prompt, and such a failure exits 1: exit 2 would block
the prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import PurePath

from pipelines.cli import exits
from pipelines.cli.options import add_session_option, description

DEFAULT_TIER = "capture"
HOOK_TEXT_FIELDS = {
    "UserPromptSubmit": ("prompt", "user"),
    "Stop": ("last_assistant_message", "assistant"),
    "SubagentStop": ("last_assistant_message", "assistant"),
}
"""Hook event -> (payload field holding the text, role of the captured record)."""


class InputError(ValueError):
    """The input cannot become a capture record; the message is the one line the user sees."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="append one record to the capture inbox (for hooks); prints its ULID",
                       description=description(__doc__))
    p.add_argument("--text", help="the text to capture (instead of a JSON record on stdin)")
    p.add_argument("--tier", help=f"memory tier of the record (default: the record's own, else {DEFAULT_TIER!r})")
    add_session_option(p, "session the record belongs to", old=("--session-id",))
    p.add_argument("--from-hook", action="store_true",
                   help="stdin is a Claude Code hook payload (UserPromptSubmit, Stop, SubagentStop)")
    p.add_argument("--requeue-overflow", action="store_true",
                   help="move envelopes set aside by a full queue (overflow/) back into it, print how many")
    p.set_defaults(handler=run, manages_home=True)  # inside run's error handling: a hook never sees exit 2


def run(args: argparse.Namespace) -> int:
    from resources.capture.queue import CaptureQueue, CaptureRecordError
    from resources.config.private_home import make_private
    from resources.config.settings import Settings

    settings = None
    try:
        settings = Settings.from_env(check_uris=False)  # the inbox is local: a bad bucket URI must not lose a record
        make_private(settings)
        queue = CaptureQueue.from_settings(settings)
        if args.requeue_overflow:
            print(f"requeued {queue.requeue_overflow()} envelope(s); pending now {queue.pending_count()}")
            return 0
        record = build_record(args, lambda: _read_stdin(4 * queue.max_record_bytes))
        if record is None:
            print("sessionlake capture: nothing to capture in this hook event", file=sys.stderr)
            return 0
        ulid = queue.append(record)
    except (InputError, CaptureRecordError) as exc:
        print(f"sessionlake capture: {exc}", file=sys.stderr)
        return exits.FAILED if args.from_hook else exits.BAD_USAGE
    except (OSError, ValueError) as exc:  # unwritable home, disk full, bad SESSIONLAKE_* value
        print(f"sessionlake capture: could not append: {_named(exc, settings)}", file=sys.stderr)
        return exits.FAILED if args.from_hook else exits.BAD_USAGE
    print(ulid, file=sys.stderr if args.from_hook else sys.stdout)
    return 0


def _named(exc: Exception, settings) -> str:
    """A full or read-only disk as `resources.environment` names it (the inbox's path and file system,
    when the error does not carry a path); any other error as it is."""
    if not isinstance(exc, OSError):
        return str(exc)
    from resources.environment import environment_failure

    if exc.filename is None and settings is not None:
        exc.filename = str(settings.capture_dir)
    return environment_failure(exc) or str(exc)


def _read_stdin(limit: int) -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("no input: pipe a JSON record on stdin, or pass --text")
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"input is over {limit:,} bytes")
    return data


def _parse_object(data: bytes, what: str) -> dict:
    if not data.strip():
        raise InputError(f"empty input: expected {what} on stdin")
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise InputError(f"stdin is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"expected {what}, got a JSON {type(obj).__name__}")
    return obj


def build_record(args: argparse.Namespace, read_stdin) -> dict | None:
    """The record to append from the arguments (and stdin, read only when needed); None: nothing to capture."""
    from resources.capture.files import now_iso

    if args.from_hook:
        if args.text is not None:
            raise InputError("--from-hook reads the hook payload from stdin; drop --text")
        record = hook_record(_parse_object(read_stdin(), "a Claude Code hook payload (a JSON object)"))
        if record is None:
            return None
    elif args.text is not None:
        record = {"text": args.text}
    else:
        record = _parse_object(read_stdin(), 'a JSON object with a "text" field')
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        raise InputError('the record needs a non-empty string "text"')
    if args.tier is not None:
        if not args.tier.strip():
            raise InputError("--tier must not be empty")
        record["tier"] = args.tier
    record.setdefault("tier", DEFAULT_TIER)
    if args.session is not None:
        record["session_id"] = args.session
    record.setdefault("timestamp", now_iso())
    return record


def hook_record(payload: dict) -> dict | None:
    """A capture record from a Claude Code hook payload, or None when the event carries no text."""
    event = payload.get("hook_event_name")
    if event not in HOOK_TEXT_FIELDS:
        return None
    field, role = HOOK_TEXT_FIELDS[event]
    text = payload.get(field)
    if not isinstance(text, str) or not text.strip():
        return None
    record = {"text": text, "role": role, "source": f"claude-code:{event}"}
    for key in ("session_id", "cwd", "transcript_path"):
        if isinstance(payload.get(key), str) and payload[key]:
            record[key] = payload[key]
    if "transcript_path" in record:
        # <sessions root>/<project dir>/<session>.jsonl: the same project key the session ingest uses
        record["project"] = PurePath(record["transcript_path"]).parent.name
    return record
