"""``python -m bench [NAME ...] [--quick]``: run benchmarks, print one table, write JSON.

Each benchmark is a module ``bench/<name>.py`` with ``run(quick: bool) -> list[dict]``; every row has
``metric``, ``value``, ``unit`` and, where the issue names one, ``baseline`` (the peer or physical
floor measured in the same run), ``ratio`` and ``target``. Results go to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

BENCHMARKS = ("ingest", "capture", "recall", "lance_health", "archive", "statusline", "orchestration", "postgres",
              "agents", "team", "startup", "mcp", "sync", "dropin")
RESULTS_DIR = Path(__file__).parent / "results"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def print_table(name: str, rows: list[dict]) -> None:
    cols = ["metric", "value", "unit", "baseline", "ratio", "target", "ok"]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print(f"\n== {name} ==")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller corpora, for a smoke run")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.names or BENCHMARKS:
        started = time.perf_counter()
        rows = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        print_table(name, rows)
        failed |= any(r.get("ok") is False for r in rows)
        out = RESULTS_DIR / f"{name}.json"
        out.write_text(json.dumps({
            "benchmark": name, "quick": args.quick, "python": platform.python_version(),
            "machine": platform.machine(), "elapsed_sec": round(time.perf_counter() - started, 3), "rows": rows,
        }, indent=2, default=str))
        print(f"-> {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
