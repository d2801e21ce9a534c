"""The usage processor: one warehouse row per API response, counted once (see resources/usage.py).

Only a top-level ``message.usage`` counts, on lines whose ``type`` is ``assistant`` or absent (older
writers omit it); ``progress`` lines that embed copies of subagent messages are ignored.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from pipelines.processors.contract import ProcessorResult, SessionProcessor
from resources.pricing import FAST_SUFFIX, PriceTable
from resources.sessions import ParseStats, iter_jsonl
from resources.state import Connection
from resources.usage import sync_prices, unpriced_models, upsert_usage

FILES_PER_COMMIT = 5000
"""Rows of this many files are written per DuckDB transaction (bounded memory on a huge first ingest)."""


def response_key(obj: dict, offset: int, session_key: str) -> tuple[str, tuple[int, int]] | None:
    """(de-duplication key, best-copy rank) of a line carrying billable usage, else None.

    Cheap on purpose: it runs on every assistant line, and only each key's best line becomes a row.
    """
    if obj.get("type", "assistant") != "assistant":
        return None
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return None
    message_id = message.get("id")
    request_id = obj.get("requestId")
    if message_id and request_id:
        key = f"{message_id}:{request_id}"
    elif message_id:
        key = str(message_id)
    else:  # nothing to de-duplicate on: the line's own position is its identity
        key = "pos:" + hashlib.sha256(f"{session_key}\0{offset}".encode()).hexdigest()[:32]
    try:
        total = (usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
                 + usage.get("cache_creation_input_tokens", 0) + usage.get("cache_read_input_tokens", 0))
    except TypeError:  # a null or non-numeric count somewhere: count the numeric ones
        total = sum(_int(usage.get(k)) for k in _TOKEN_KEYS)
    return key, (0 if obj.get("isSidechain") else 1, total)


def usage_row(key: str, obj: dict, offset: int, session_key: str, project: str) -> dict | None:
    """The warehouse row for the line ``obj`` (already known to carry usage), or None without a timestamp."""
    ts = _parse_ts(obj.get("timestamp"))
    if ts is None:
        return None
    message = obj["message"]
    usage = message["usage"]
    cache_split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    cost = obj.get("costUSD")
    return {
        "dedup_key": key,
        "message_id": message.get("id"),
        "request_id": obj.get("requestId"),
        "ts": ts,
        "session_id": obj.get("sessionId"),
        "session_key": session_key,
        "project": project,
        "model": billed_model(message.get("model"), usage),
        "git_branch": obj.get("gitBranch") or None,
        "cwd": obj.get("cwd"),
        "is_sidechain": bool(obj.get("isSidechain", False)),
        "agent_id": obj.get("agentId"),
        "input_tokens": _int(usage.get("input_tokens")),
        "output_tokens": _int(usage.get("output_tokens")),
        "cache_creation_tokens": _int(usage.get("cache_creation_input_tokens")),
        "cache_read_tokens": _int(usage.get("cache_read_input_tokens")),
        "cache_creation_1h_tokens": _int(cache_split.get("ephemeral_1h_input_tokens")),
        "cost_usd": float(cost) if isinstance(cost, int | float) else None,
        "line_offset": offset,
    }


def billed_model(model, usage: dict) -> str | None:
    """The model name a response is reported and priced under: ``<model>-fast`` for fast mode, as ccusage does."""
    if model and usage.get("speed") == "fast" and not model.endswith(FAST_SUFFIX):
        return model + FAST_SUFFIX
    return model


_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class UsageProcessor(SessionProcessor):
    """Turns assistant lines into ``usage_messages`` rows, batched per commit."""

    name = "usage"
    commit_every_files = FILES_PER_COMMIT

    def __init__(self, prices: PriceTable | None = None):
        self.prices = prices or PriceTable.load()
        self._batch: dict[str, tuple[tuple[int, int], dict]] = {}
        self.rows_written = 0
        self.unpriced_models: dict[str, int] = {}
        """Models of this run's rows that have no price, with their unpriced responses (whole warehouse)."""

    def begin_run(self) -> None:
        self._batch.clear()
        self.rows_written = 0
        self.unpriced_models = {}

    def process_session(self, session_path: Path, username: str, session_key: str,
                        conn: Connection, *, start_offset: int = 0) -> ProcessorResult:
        stats = ParseStats()
        best: dict[str, tuple[tuple[int, int], int, dict]] = {}
        for offset, obj in iter_jsonl(session_path, start_offset, stats, contains=b'"usage"'):
            keyed = response_key(obj, offset, session_key)
            if keyed is not None:
                key, rank = keyed
                current = best.get(key)
                if current is None or rank > current[0]:
                    best[key] = (rank, offset, obj)
        items = 0
        for key, (rank, offset, obj) in best.items():
            row = usage_row(key, obj, offset, session_key, username)
            if row is not None:
                items += 1
                current = self._batch.get(key)
                if current is None or rank > current[0]:
                    self._batch[key] = (rank, row)
        return ProcessorResult(items_count=items, end_offset=stats.end_offset, bytes_read=stats.bytes_read,
                               malformed=stats.malformed)

    def commit(self, conn: Connection) -> None:
        sync_prices(conn, self.prices)
        rows = [row for _, row in self._batch.values()]
        self.rows_written += upsert_usage(conn, rows, self.prices)
        models = sorted({r["model"] for r in rows if r["model"]})
        if models:
            for item in unpriced_models(conn, "list_contains($models, model)", {"models": models}):
                self.unpriced_models[item["model"]] = item["responses"]
        self._batch.clear()

    def end_run(self) -> dict:
        """``rows_written`` and ``unpriced_responses`` (numbers for the asset metadata); the model names are
        in `unpriced_models`."""
        return {"rows_written": self.rows_written, "unpriced_responses": sum(self.unpriced_models.values())}


def _int(value) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _parse_ts(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
