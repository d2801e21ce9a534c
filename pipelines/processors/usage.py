"""The usage processor: one warehouse row per API response, counted once (see resources/usage/warehouse.py).

Only a top-level ``message.usage`` counts, on lines whose ``type`` is ``assistant`` or absent (older
writers omit it); ``progress`` lines that embed copies of subagent messages are ignored.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from pipelines.processors.contract import ProcessorResult, SessionProcessor
from resources.sessions import ParseStats, iter_jsonl
from resources.state import Connection
from resources.usage.pricing import FAST_SUFFIX, PriceTable
from resources.usage.warehouse import sync_prices, unpriced_models, upsert_usage

FILES_PER_COMMIT = 5000
"""Rows of this many files are written per DuckDB transaction (bounded memory on a huge first ingest)."""


class MalformedUsage(ValueError):
    """A line carries usage that cannot become a warehouse row; the message says which value and why."""


MAX_TOKENS = 2**63 - 1
"""The largest count a warehouse column (BIGINT) holds; a line's four counts together must fit too."""

_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_CACHE_SPLIT_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_STRING_FIELDS = ("requestId", "sessionId", "gitBranch", "cwd", "agentId", "message.id", "message.model")


def response_key(obj: dict, offset: int, session_key: str) -> tuple[str, tuple[int, int]] | None:
    """(de-duplication key, best-copy rank) of a line carrying billable usage, else None.

    Raises `MalformedUsage` when the line carries usage that cannot be stored: a count that is not an
    integer in 0..2^63-1 (null or absent counts are 0), a total beyond that, a text field that is not a
    string, or no ISO-8601 timestamp. Such a line never competes for best copy, so it costs nothing
    but itself. Cheap on purpose: it runs on every assistant line.
    """
    if obj.get("type", "assistant") != "assistant":
        return None
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return None
    total = _check_counts(usage, _TOKEN_KEYS, "usage.")
    split = usage.get("cache_creation")
    if split.__class__ is dict:
        _check_counts(split, _CACHE_SPLIT_KEYS, "usage.cache_creation.")
    for value in (obj.get("requestId"), obj.get("sessionId"), obj.get("gitBranch"), obj.get("cwd"),
                  obj.get("agentId"), message.get("id"), message.get("model")):
        if value is not None and value.__class__ is not str:
            raise MalformedUsage(_wrong_string(obj, message))
    if _parse_ts(obj.get("timestamp")) is None:
        raise MalformedUsage(f"timestamp is not an ISO-8601 time: {obj.get('timestamp')!r}"[:200])
    message_id = message.get("id")
    request_id = obj.get("requestId")
    if message_id and request_id:
        key = f"{message_id}:{request_id}"
    elif message_id:
        key = message_id
    else:  # nothing to de-duplicate on: the line's own position is its identity
        key = "pos:" + hashlib.sha256(f"{session_key}\0{offset}".encode()).hexdigest()[:32]
    return key, (0 if obj.get("isSidechain") else 1, total)


def _check_counts(counts: dict, keys: tuple[str, ...], prefix: str) -> int:
    """The sum of ``counts[keys]`` (absent or null: 0); `MalformedUsage` for any value that is not a
    token count, or a sum that a BIGINT cannot hold."""
    total = 0
    for key in keys:
        value = counts.get(key)
        if value.__class__ is int and 0 <= value <= MAX_TOKENS:  # exact class: a bool is refused
            total += value
        elif value is not None:
            raise MalformedUsage(f"{prefix}{key} is not a token count (an integer 0..2^63-1): {value!r}"[:200])
    if total > MAX_TOKENS:
        raise MalformedUsage(f"{prefix}* token counts add up to {total}, more than 2^63-1")
    return total


def usage_row(key: str, obj: dict, offset: int, session_key: str, project: str) -> dict:
    """The warehouse row for the line ``obj``, which `response_key` accepted."""
    message = obj["message"]
    usage = message["usage"]
    cache_split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    cost = obj.get("costUSD")
    return {
        "dedup_key": key,
        "message_id": message.get("id"),
        "request_id": obj.get("requestId"),
        "ts": _parse_ts(obj["timestamp"]),
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
        for line in iter_jsonl(session_path, start_offset, stats, contains=b'"usage"'):
            try:
                keyed = response_key(line.obj, line.offset, session_key)
            except MalformedUsage as exc:
                stats.reject(line, str(exc))
                continue
            if keyed is not None:
                key, rank = keyed
                current = best.get(key)
                if current is None or rank > current[0]:
                    best[key] = (rank, line.offset, line.obj)
        for key, (rank, offset, obj) in best.items():
            current = self._batch.get(key)
            if current is None or rank > current[0]:
                self._batch[key] = (rank, {**usage_row(key, obj, offset, session_key, username), **self.origin})
        return ProcessorResult(items_count=len(best), end_offset=stats.end_offset, bytes_read=stats.bytes_read,
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

    def discard(self) -> None:
        self._batch.clear()

    def end_run(self) -> dict:
        """``rows_written`` and ``unpriced_responses`` (numbers for the asset metadata); the model names are
        in `unpriced_models`."""
        return {"rows_written": self.rows_written, "unpriced_responses": sum(self.unpriced_models.values())}


def _wrong_string(obj: dict, message: dict) -> str:
    """Which text field of a line is not a string (the slow path of `response_key`)."""
    values = {name: (message if name.startswith("message.") else obj).get(name.removeprefix("message."))
              for name in _STRING_FIELDS}
    name, value = next((n, v) for n, v in values.items() if v is not None and not isinstance(v, str))
    return f"{name} is not a string: {value!r}"[:200]


def _int(value) -> int:
    return value or 0  # validated by response_key: an int or None


def _parse_ts(value) -> datetime | None:
    if value.__class__ is not str:
        return None
    try:
        return datetime.fromisoformat(value)  # Python 3.11+ reads the trailing "Z"
    except ValueError:
        return None
