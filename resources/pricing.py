"""The price table: USD per million tokens per model, shipped with the package, overridable by a file.

Model ids in transcripts carry a date suffix (``claude-sonnet-4-20250514``); a price entry matches a
model exactly or as the longest prefix. Models with no entry are reported as unpriced, never
silently costed at $0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

COST_MODES = ("auto", "calculate", "display")
"""auto: costUSD from the file where present, else computed; calculate: always computed; display: costUSD only."""

UNPRICED_MODELS = frozenset({"<synthetic>"})
"""Placeholder model names Claude Code writes for local, unbilled messages."""


@dataclass(frozen=True)
class ModelPrice:
    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float


class PriceTable:
    """Per-model prices; `lookup(model)` resolves exact ids and dated variants by longest prefix."""

    def __init__(self, prices: dict[str, ModelPrice]):
        self.prices = dict(prices)
        self._by_length = sorted(self.prices, key=len, reverse=True)

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The shipped table, with entries from ``override`` (same JSON shape) merged over it."""
        shipped = importlib_resources.files("resources").joinpath("prices.json").read_text()
        entries = json.loads(shipped)["models"]
        if override is not None:
            try:
                entries.update(json.loads(Path(override).read_text())["models"])
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(f"price file {override}: expected {{\"models\": {{...}}}} ({exc})") from exc
        return cls({name: _parse(name, e) for name, e in entries.items()})

    def lookup(self, model: str | None) -> ModelPrice | None:
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        for name in self._by_length:
            if model.startswith(name):
                return self.prices[name]
        return None

    def resolve(self, models: set[str]) -> dict[str, ModelPrice]:
        """Prices for each of ``models`` that has one (what gets written to DuckDB's model_prices)."""
        return {m: p for m in models if (p := self.lookup(m)) is not None}

    def fingerprint(self) -> str:
        body = json.dumps({k: vars(v) for k, v in sorted(self.prices.items())}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def _parse(name: str, entry: dict) -> ModelPrice:
    try:
        return ModelPrice(
            input=float(entry["input"]),
            output=float(entry["output"]),
            cache_write=float(entry["cache_write"]),
            cache_write_1h=float(entry.get("cache_write_1h", 2 * float(entry["input"]))),
            cache_read=float(entry["cache_read"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price entry {name!r} needs numeric input, output, cache_write, cache_read") from exc
