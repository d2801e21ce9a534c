"""``sessionlake prices [MODEL ...]``: the price each model gets and where it came from.

Without MODEL: every model in the warehouse, and every entry of the override file and of the shipped
supplement. Sources: ``override`` (SESSIONLAKE_PRICE_FILE), ``database`` (genai-prices, exact name),
``alias`` (a date-stamped name of a database model), ``supplement`` (resources/usage/prices.json), or ``none``:
unpriced, costed at nothing and named on stderr. Exit 0; 1 when a MODEL asked for has no price; 2 when
the price file is unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli.options import description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prices", help="show the price each model gets and its source (database, alias, override)",
                       description=description(__doc__))
    p.add_argument("models", nargs="*", metavar="MODEL", help="model names as transcripts write them")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from resources.config.settings import Settings
    from resources.state.store import StateStore
    from resources.usage.pricing import PriceTable

    settings = Settings.from_env()
    try:
        table = PriceTable.load(settings.price_file)
    except ValueError as exc:
        print(f"sessionlake prices: {exc}", file=sys.stderr)
        return 2
    responses: dict[str, int] = {}
    if not args.models:
        with StateStore.from_settings(settings).connect() as conn:
            rows = conn.execute("SELECT model, count(*) FROM usage_messages WHERE model IS NOT NULL "
                                "GROUP BY model").fetchall()
        responses = {m: int(n) for m, n in rows}
    models = args.models or sorted({*responses, *table.overrides, *table.supplement})
    entries = [_entry(model, table.lookup(model), responses.get(model)) for model in models]
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
    else:
        print(_text(entries))
    unpriced = [e["model"] for e in entries if e["source"] == "none"]
    for model in unpriced:
        print(f"warning: no price for model {model}; add it with SESSIONLAKE_PRICE_FILE", file=sys.stderr)
    return 1 if args.models and unpriced else 0


def _entry(model: str, price, responses: int | None) -> dict:
    entry = {"model": model, "source": price.source if price else "none", "matched": price.matched if price else None,
             "responses": responses, "bands": []}
    for band in price.bands if price else ():
        entry["bands"].append({"validFrom": band.valid_from, "validTo": band.valid_to,
                               "aboveTokens": band.above_tokens if band.above_tokens >= 0 else None,
                               "upToTokens": band.up_to_tokens, **{_CAMEL[k]: v for k, v in vars(band.rates).items()}})
    return entry


def _text(entries: list[dict]) -> str:
    from pipelines.cli.table import format_table
    from resources.usage.pricing import Rates, rates_text

    header = ("model", "source", "matched", "when", "request input", "USD/MTok: input / output / 5m write / "
              "1h write / read")
    rows = []
    for e in entries:
        if not e["bands"]:
            rows.append((e["model"], e["source"], "-", "-", "-", "unpriced"))
        for band in e["bands"]:
            when = ("always" if not (band["validFrom"] or band["validTo"]) else
                    f"{_day(band['validFrom'])}..{_day(band['validTo'])}")
            size = (f"> {band['aboveTokens']:,}" if band["aboveTokens"] is not None else
                    f"<= {band['upToTokens']:,}" if band["upToTokens"] is not None else "any")
            rates = Rates(**{k: band[camel] for k, camel in _CAMEL.items()})
            rows.append((e["model"], e["source"], e["matched"], when, size, rates_text(rates)))
    return format_table(header, rows)


_CAMEL = {"input": "input", "output": "output", "cache_write": "cacheWrite", "cache_write_1h": "cacheWrite1h",
          "cache_read": "cacheRead"}


def _day(value) -> str:
    return value.date().isoformat() if value else ""
