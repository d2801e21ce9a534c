"""Model prices: genai-prices' bundled database (offline), a small shipped supplement, and an override file.

A model name from a transcript gets a price only by one of these, first match wins:

1. ``override``: an entry of ``SESSIONLAKE_PRICE_FILE`` named exactly like the model, or like the model
   with its date stamp removed;
   then, for a name that starts with provider prefixes (`PROVIDER_PREFIXES`: OpenCode writes
   ``openai/gpt-5``, ``anthropic/claude-sonnet-4``, ``google/gemini-2.5-pro``; routers stack them,
   ``openrouter/anthropic/...``), the price of the name without them by all of these rules, as ccusage
   prices it: the model is the same whoever routed it, and its maker's list price applies (genai-prices
   files ``anthropic/claude-sonnet-4`` under Google's Vertex listing, whose 1-hour cache write differs);
   its ``matched`` says which entry it got. Only when that name has no price do 2-4 try the name as written;
2. ``database``: a model of genai-prices (first-party providers only) whose id, or one of the names it
   lists for that model, is exactly the model name;
3. ``alias``: the same, for the model name with its date stamp removed (``claude-sonnet-4-20250514`` ->
   ``claude-sonnet-4``);
4. ``supplement``: ``resources/usage/prices.json``, provider list prices the database does not have yet
   (same matching as an override).

A name is never priced by a family prefix: ``claude-opus-4-6`` is not ``claude-opus-4``, and a model
nobody lists is unpriced (reported, costed at nothing). ``<model>-fast`` is a response with
``usage.speed == "fast"``; it is priced at the database's fast-mode variant of ``<model>``, or by an
override or supplement entry named ``<model>-fast``.

A price is a list of bands: each holds from a date (the provider's price changes) and, for long-context
pricing, above a number of input tokens per request (input + cache writes + cache reads, as the
providers count it); within a band every token of the request is billed at the band's rates.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Protocol

COST_MODES = ("auto", "calculate", "display")
"""auto: costUSD from the file where present, else computed; calculate: always computed; display: costUSD only."""

UNPRICED_MODELS = frozenset({"<synthetic>"})
"""Placeholder model names Claude Code writes for local, unbilled messages."""

FAST_SUFFIX = "-fast"
"""Appended to the model name of a response billed at fast-mode rates (``usage.speed == "fast"``), as ccusage does."""

DATABASE_PROVIDERS = ("anthropic", "openai", "google", "deepseek", "mistral", "x-ai", "moonshotai", "zai")
"""genai-prices providers searched, in this order: the model makers' own list prices, never a reseller's."""

SOURCES = ("override", "database", "alias", "supplement")

PROVIDER_PREFIXES = frozenset({"anthropic", "openai", "google", "gemini", "vertex_ai", "azure", "openrouter",
                               "deepseek", "mistral", "x-ai", "xai", "moonshotai", "zai"})
"""Path segments that name who served a model, not the model: the providers priced here and the routers
(Azure, Vertex AI, OpenRouter) ccusage strips too."""

RULES_VERSION = "3"
"""Part of the fingerprint: bump when the way a name maps to a price changes, so stored rows are re-costed."""

_DATE_STAMP = re.compile(r"(?:[-@]20\d{6}|-20\d{2}-\d{2}-\d{2})$")
_RATE_KEYS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")


@dataclass(frozen=True)
class Rates:
    """USD per million tokens. ``cache_write`` is the 5-minute cache write, ``cache_write_1h`` the 1-hour one."""

    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class PriceBand:
    """``rates`` apply to a request at a time in [valid_from, valid_to) with input in (above_tokens, up_to_tokens]."""

    rates: Rates
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    above_tokens: int = -1
    up_to_tokens: int | None = None


@dataclass(frozen=True)
class DatabasePrice:
    """What genai-prices' database says of one of its names: the model's ``id`` and its bands (`_database_bands`)
    at standard and at fast-mode rates (None: none)."""

    id: str
    bands: tuple[PriceBand, ...] | None
    fast_bands: tuple[PriceBand, ...] | None


class DatabaseSource(Protocol):
    """The database's prices computed elsewhere (`resources.usage.prices_ahead.PricesAhead`)."""

    def prices(self) -> dict[str, DatabasePrice] | None:
        """`database_prices()` as computed there, or None when that failed."""


@dataclass(frozen=True)
class ModelPrice:
    """The price ``model`` gets: its bands, the entry it matched and where that came from (one of `SOURCES`)."""

    model: str
    matched: str
    source: str
    bands: tuple[PriceBand, ...]


class PriceTable:
    """Resolves model names to prices by the rules in this module's docstring; `lookup` is cached per name."""

    def __init__(self, overrides: dict[str, tuple[PriceBand, ...]] | None = None,
                 supplement: dict[str, tuple[PriceBand, ...]] | None = None, database: DatabaseSource | None = None):
        self.overrides = dict(overrides or {})
        self._supplement = None if supplement is None else dict(supplement)
        """None: the shipped one, parsed when a name first needs it (a report that prices nothing new never does)."""
        self._database = database
        """Where the database's prices come from when a name first needs them (`database_prices` computed in
        another process, `resources.usage.prices_ahead`); None: genai-prices loaded in this process."""
        self._cache: dict[str, ModelPrice | None] = {}

    @property
    def supplement(self) -> dict[str, tuple[PriceBand, ...]]:
        return _shipped_supplement() if self._supplement is None else self._supplement

    @classmethod
    def load(cls, override: Path | None = None, database: DatabaseSource | None = None) -> PriceTable:
        """The database and the shipped supplement, with the entries of the ``override`` file over them
        (``database``: see `PriceTable.__init__`)."""
        if override is None:
            return cls(database=database)
        try:
            text = Path(override).read_text()
        except OSError as exc:
            raise ValueError(f"price file {override}: {exc}") from exc
        return cls(parse_price_file(text, str(override)), database=database)

    def lookup(self, model: str | None) -> ModelPrice | None:
        if not model or model in UNPRICED_MODELS:
            return None
        if model not in self._cache:
            self._cache[model] = self._find(model)
        return self._cache[model]

    def load_database(self) -> None:
        """Load genai-prices' database now (~0.17 s of CPU; otherwise when a name first needs it), or take it
        from the process that loaded it ahead."""
        if self._database_prices() is None:
            _database_models()

    def _database_prices(self) -> dict[str, DatabasePrice] | None:
        """The database's prices taken from another process (None: none, or it failed; use this one's)."""
        if self._database is not None and not isinstance(self._database, dict):
            self._database = self._database.prices()  # waits for it once
        return self._database

    def resolve(self, models: set[str]) -> dict[str, ModelPrice]:
        """Prices for each of ``models`` that has one (what gets written to DuckDB's model_prices)."""
        return {m: p for m in models if (p := self.lookup(m)) is not None}

    def fingerprint(self) -> str:
        """Changes whenever any name could get another price: database, override, supplement, rules. Every
        report computes it, so it is made of what is cheap to tell: the database's version (see
        `_database_identity`) and the shipped supplement's text, not their parsed entries."""
        supplement = _shipped_text() if self._supplement is None else _entries_json(self._supplement)
        body = json.dumps([RULES_VERSION, _database_identity(), _entries_json(self.overrides), supplement],
                          sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def _find(self, model: str) -> ModelPrice | None:
        found = _find_entry(self.overrides, model)
        if found:
            return ModelPrice(model, found[0], "override", found[1])
        bare = _unprefixed(model)
        if bare is not None and (price := self.lookup(bare)) is not None:
            return ModelPrice(model, price.matched, price.source, price.bands)
        fast = model.endswith(FAST_SUFFIX)
        base = model[: -len(FAST_SUFFIX)] if fast else model
        database = self._database_prices()
        for name, source in ((base, "database"), (_undated(base), "alias")):
            if name is None:
                continue
            found = database.get(name.lower()) if database is not None else _database_price(name.lower())
            bands = found and (found.fast_bands if fast else found.bands)
            if bands:
                return ModelPrice(model, found.id + (FAST_SUFFIX if fast else ""), source, bands)
        found = _find_entry(self.supplement, model)
        if found:
            return ModelPrice(model, found[0], "supplement", found[1])
        return None


def parse_price_file(text: str, where: str) -> dict[str, tuple[PriceBand, ...]]:
    """Entries of a price file: ``{"models": {NAME: {input, output, cache_write, cache_read[, cache_write_1h]
    [, long_context: {above_tokens, input, output, cache_write, cache_read[, cache_write_1h]}]}}}``, USD per
    million tokens. ``cache_write_1h`` defaults to 2x input (Anthropic's rule); a long-context block applies to
    requests whose input is above ``above_tokens``."""
    try:
        models = json.loads(text)["models"]
        if not isinstance(models, dict):
            raise TypeError("models is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"price file {where}: expected {{\"models\": {{...}}}} ({exc})") from exc
    return {name: _parse_entry(where, name, entry) for name, entry in models.items()}


def _parse_entry(where: str, name: str, entry) -> tuple[PriceBand, ...]:
    try:
        base = _parse_rates(entry)
        long_context = entry.get("long_context")
        if long_context is None:
            return (PriceBand(base),)
        above = int(long_context["above_tokens"])
        return (PriceBand(base, up_to_tokens=above), PriceBand(_parse_rates(long_context), above_tokens=above))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price file {where}: entry {name!r} needs numeric input, output, cache_write, "
                         f"cache_read (and above_tokens in long_context) ({exc!r})") from exc


def _parse_rates(entry: dict) -> Rates:
    values = {k: float(entry[k]) for k in ("input", "output", "cache_write", "cache_read")}
    values["cache_write_1h"] = float(entry.get("cache_write_1h", 2 * values["input"]))
    if any(v < 0 for v in values.values()):
        raise ValueError("negative price")
    return Rates(**values)


def _find_entry(entries: dict[str, tuple[PriceBand, ...]], model: str) -> tuple[str, tuple[PriceBand, ...]] | None:
    """An entry named ``model``, or (for ``X-DATE`` and ``X-DATE-fast``) named like it without the date."""
    if model in entries:
        return model, entries[model]
    fast = model.endswith(FAST_SUFFIX)
    undated = _undated(model[: -len(FAST_SUFFIX)] if fast else model)
    if undated is not None:
        name = undated + (FAST_SUFFIX if fast else "")
        if name in entries:
            return name, entries[name]
    return None


def _unprefixed(model: str) -> str | None:
    """``model`` without the `PROVIDER_PREFIXES` it starts with (``openrouter/openai/gpt-5`` -> ``gpt-5``), or None."""
    name = model
    head, _, rest = name.partition("/")
    while rest and head.lower() in PROVIDER_PREFIXES:
        name = rest
        head, _, rest = name.partition("/")
    return name if name != model else None


def _undated(model: str) -> str | None:
    """``model`` without a trailing date stamp (``-20250514``, ``@20250514``, ``-2025-05-14``), or None."""
    stripped = _DATE_STAMP.sub("", model)
    return stripped if stripped != model and stripped else None


@cache
def _shipped_text() -> str:
    return Path(__file__).with_name("prices.json").read_text()  # beside this module (importlib.resources: +4 ms)


@cache
def _shipped_supplement() -> dict[str, tuple[PriceBand, ...]]:
    return parse_price_file(_shipped_text(), "resources/usage/prices.json")


def _database_identity() -> str:
    """genai-prices' version, read from the name of its ``dist-info`` folder beside the package, found without
    importing it (loading its data takes ~0.3 s): what ``importlib.metadata.version`` says, without its scan
    of every path entry. Two installs of one version agree, so a warehouse that several installs share is
    not re-costed by each in turn. importlib.metadata answers when that folder is not found."""
    spec = importlib.util.find_spec("genai_prices")
    if spec is not None and spec.submodule_search_locations:
        with contextlib.suppress(OSError):
            site = os.path.dirname(spec.submodule_search_locations[0])
            found = [name for name in os.listdir(site)
                     if name.startswith("genai_prices-") and name.endswith(".dist-info")]
            if len(found) == 1:
                return found[0].removeprefix("genai_prices-").removesuffix(".dist-info")
    from importlib.metadata import version

    return version("genai-prices")


@cache
def _database_models() -> dict:
    """Exact names -> genai-prices ModelInfo: each model's id and the names its match rule lists as equal or as
    a prefix (a prefix's own text is a name; anything longer is not)."""
    from genai_prices import data_snapshot
    from genai_prices.types import ClauseEquals, ClauseOr, ClauseStartsWith

    providers = {p.id: p for p in data_snapshot.get_snapshot().providers}
    names: dict = {}
    for provider_id in DATABASE_PROVIDERS:
        for info in providers[provider_id].models if provider_id in providers else ():
            clauses = info.match.or_ if isinstance(info.match, ClauseOr) else [info.match]
            listed = [c.equals for c in clauses if isinstance(c, ClauseEquals)]
            listed += [c.starts_with for c in clauses if isinstance(c, ClauseStartsWith)]
            for name in (info.id, *listed):
                names.setdefault(name.lower(), info)
    return names


def _database_price(name: str) -> DatabasePrice | None:
    """The database's price of the (lower-case) ``name``, or None when it lists no such name."""
    info = _database_models().get(name)
    if info is None:
        return None
    return DatabasePrice(info.id, _database_bands(info, fast=False), _database_bands(info, fast=True))


def database_prices() -> dict[str, DatabasePrice]:
    """Every name of the database (lower case) with its price, computed once per model: what another process
    hands a `PriceTable` (``database``), ~90 KB pickled."""
    by_model: dict[int, DatabasePrice] = {}
    prices = {}
    for name, info in _database_models().items():
        if id(info) not in by_model:
            by_model[id(info)] = DatabasePrice(info.id, _database_bands(info, fast=False),
                                               _database_bands(info, fast=True))
        prices[name] = by_model[id(info)]
    return prices


def _database_bands(info, *, fast: bool) -> tuple[PriceBand, ...] | None:
    """Bands of a genai-prices model: one period per price change (start dates), one band per long-context tier.
    Fast mode overlays the model's ``speed == fast`` variant; None if it has none, or no input/output price.
    Time-of-day prices (off-peak discounts) are left out: the standard price applies."""
    from genai_prices.types import ConditionalPrice, StartDateConstraint
    from genai_prices.types import ModelPrice as DbPrice

    conditional = [ConditionalPrice(prices=info.prices)] if isinstance(info.prices, DbPrice) else [
        c for c in info.prices if c.constraint is None or isinstance(c.constraint, StartDateConstraint)]
    variants = [v for v in info.price_variants or () if v.when == {"speed": "fast"}
                and (v.constraint is None or isinstance(v.constraint, StartDateConstraint))]
    if not conditional or (fast and not variants):
        return None
    starts = sorted({c.constraint.start_date for c in [*conditional, *variants] if c.constraint is not None})
    bounds = [None, *starts, None]
    bands: list[PriceBand] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        day = start or date.min
        active = [c for c in conditional if c.constraint is None or c.constraint.start_date <= day]
        standard = (active or conditional[:1])[-1].prices
        prices = {k: getattr(standard, f"{k}_mtok", None) for k in _RATE_KEYS}
        if fast:
            live = [v for v in variants if v.constraint is None or v.constraint.start_date <= day]
            if not live:
                continue
            for variant in reversed(live):  # the first variant that sets a key wins, as in genai-prices
                prices.update({k: p for k in _RATE_KEYS
                               if (p := getattr(variant.prices, f"{k}_mtok", None)) is not None})
        if prices["input"] is None or prices["output"] is None:
            return None
        bands += _tier_bands(prices, _midnight(start), _midnight(end))
    return tuple(bands) or None


def _tier_bands(prices: dict, valid_from: datetime | None, valid_to: datetime | None) -> list[PriceBand]:
    from genai_prices.types import TieredPrices

    starts = sorted({t.start for p in prices.values() if isinstance(p, TieredPrices) for t in p.tiers})
    bounds = [-1, *starts]
    bands = []
    for i, above in enumerate(bounds):
        def rate(price, above=above):
            if isinstance(price, TieredPrices):
                applicable = [t.price for t in price.tiers if t.start <= above]
                return float(applicable[-1] if applicable else price.base)
            return None if price is None else float(price)
        r = {k: rate(p) for k, p in prices.items()}
        # A token kind without its own price is billed as its parent (genai-prices' leaf rule).
        r["cache_write"] = r["input"] if r["cache_write"] is None else r["cache_write"]
        r["cache_write_1h"] = r["cache_write"] if r["cache_write_1h"] is None else r["cache_write_1h"]
        r["cache_read"] = r["input"] if r["cache_read"] is None else r["cache_read"]
        bands.append(PriceBand(Rates(**r), valid_from, valid_to, above,
                               bounds[i + 1] if i + 1 < len(bounds) else None))
    return bands


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _entries_json(entries: dict[str, tuple[PriceBand, ...]]) -> dict:
    return {name: [asdict(b) for b in bands] for name, bands in sorted(entries.items())}


def rates_text(rates: Rates) -> str:
    """``$5 / $25 / $6.25 / $10 / $0.50`` (input / output / 5m write / 1h write / read, per MTok)."""
    return " / ".join(f"${Decimal(str(getattr(rates, k))).normalize():f}" for k in _RATE_KEYS)
