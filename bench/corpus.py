"""A generated Claude Code projects tree for benchmarks: realistic line shapes, known totals.

``generate_corpus(root, sessions=2000)`` writes about 50 KB per session (~100 MB for 2,000) across
projects, with multi-line responses sharing ``message.id``/``requestId`` (output final only on the
last line), sidechain copies, subagent files, summaries and tool results, and returns the
de-duplicated token totals a correct ingest must report.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

MODELS = ("claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
WORDS = (
    "refactor the parser so it streams lines and counts malformed input instead of aborting the whole run "
    "add a test for the retry path when the database file is locked by another process then measure it "
    "why does the sensor tick take so long on a large tree of sessions with many projects and subagents"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate_corpus(root: Path | str, sessions: int = 2000, projects: int = 40, seed: int = 7,
                    turns: int = 12, start: datetime | None = None) -> dict:
    """Write the tree under ``root``; return ``{files, bytes, lines, input, output, cache_creation, cache_read}``.
    Sessions begin 37 minutes apart from ``start`` (default 2025-06-01 UTC, so a seed always gives the same tree)."""
    rng = random.Random(seed)
    root = Path(root)
    totals = {"files": 0, "bytes": 0, "lines": 0, "input": 0, "output": 0, "cache_creation": 0, "cache_read": 0}
    start = start or datetime(2025, 6, 1, tzinfo=UTC)
    for s in range(sessions):
        project = f"-home-dev-project-{s % projects:03d}"
        session_id = str(uuid.UUID(int=rng.getrandbits(128)))
        ts = start + timedelta(minutes=37 * s)
        lines: list[bytes] = []
        parent = None
        model = MODELS[s % len(MODELS)]
        for _turn in range(turns):
            ts += timedelta(seconds=rng.randint(5, 300))
            user_uuid = str(uuid.UUID(int=rng.getrandbits(128)))
            lines.append(orjson.dumps({
                "parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": f"/home/dev/{project}",
                "sessionId": session_id, "version": "1.0.17", "gitBranch": "main", "type": "user",
                "message": {"role": "user", "content": _text(rng, 40)}, "uuid": user_uuid,
                "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }))
            parent = user_uuid
            msg_id = f"msg_{rng.getrandbits(64):016x}"
            req_id = f"req_{rng.getrandbits(64):016x}"
            usage = {"input_tokens": rng.randint(1, 50), "cache_creation_input_tokens": rng.randint(0, 5000),
                     "cache_read_input_tokens": rng.randint(0, 60000), "output_tokens": 0,
                     "service_tier": "standard"}
            blocks = [{"type": "thinking", "thinking": _text(rng, 60)},
                      {"type": "text", "text": _text(rng, 120)},
                      {"type": "tool_use", "id": f"toolu_{rng.getrandbits(64):016x}", "name": "Bash",
                       "input": {"command": "pytest -q", "description": _text(rng, 8)}}]
            final_output = rng.randint(50, 2000)
            for b, block in enumerate(blocks):
                ts += timedelta(milliseconds=rng.randint(50, 900))
                line_uuid = str(uuid.UUID(int=rng.getrandbits(128)))
                line_usage = dict(usage, output_tokens=final_output if b == len(blocks) - 1 else rng.randint(1, 9))
                lines.append(orjson.dumps({
                    "parentUuid": parent, "isSidechain": False, "userType": "external",
                    "cwd": f"/home/dev/{project}", "sessionId": session_id, "version": "1.0.17",
                    "gitBranch": "main", "type": "assistant", "requestId": req_id, "uuid": line_uuid,
                    "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                "content": [block], "stop_reason": None, "usage": line_usage},
                }))
                parent = line_uuid
            totals["input"] += usage["input_tokens"]
            totals["output"] += final_output
            totals["cache_creation"] += usage["cache_creation_input_tokens"]
            totals["cache_read"] += usage["cache_read_input_tokens"]
            tool_uuid = str(uuid.UUID(int=rng.getrandbits(128)))
            lines.append(orjson.dumps({
                "parentUuid": parent, "isSidechain": False, "type": "user", "sessionId": session_id,
                "uuid": tool_uuid, "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": blocks[2]["id"],
                                                         "content": _text(rng, 150)}]},
            }))
            parent = tool_uuid
        lines.append(orjson.dumps({"type": "summary", "summary": _text(rng, 6), "leafUuid": parent}))
        path = root / project / f"{session_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"\n".join(lines) + b"\n"
        path.write_bytes(data)
        totals["files"] += 1
        totals["bytes"] += len(data)
        totals["lines"] += len(lines)
    return totals
