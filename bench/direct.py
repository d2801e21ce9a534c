"""The peer of ``sessionlake ingest``: the same three processors called directly, without Dagster.

``ingest_direct(settings)`` builds UsageProcessor, MemoryProcessor and ArchiveProcessor as the
ingest step does and calls `run_processors` once. ``python -m bench.direct`` does the same in a new
process (settings from the environment) and prints the totals as JSON, so it pays Python start-up
and imports like the CLI does.
"""

from __future__ import annotations

import json
import sys

from resources.config.settings import Settings

TOTALS = ("scanned", "processed", "errors", "items_extracted", "bytes_read")


def ingest_direct(settings: Settings) -> dict[str, dict]:
    """``{processor: {TOTALS}}`` of one `run_processors` call over every agent's files, as ingest walks them."""
    from resources.archive.packs import PackStore
    from resources.ingest.processors.archive import ArchiveProcessor
    from resources.ingest.processors.memory import MemoryProcessor
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import run_processors
    from resources.memory.lance import LanceStore
    from resources.sources import found_sources, walk_all
    from resources.state.store import StateStore
    from resources.usage.pricing import PriceTable

    processors = [UsageProcessor(PriceTable.load(settings.price_file)),
                  MemoryProcessor(LanceStore.from_settings(settings)),
                  ArchiveProcessor(PackStore.from_settings(settings))]
    files = list(walk_all(found_sources(settings)))
    results = run_processors(processors, settings.sessions_dir, StateStore.from_settings(settings), files=files)
    return {name: {k: stats[k] for k in TOTALS} for name, stats in results.items()}


if __name__ == "__main__":
    totals = ingest_direct(Settings.from_env())
    print(json.dumps(totals))
    sys.exit(1 if any(t["errors"] for t in totals.values()) else 0)
