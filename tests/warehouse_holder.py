"""The warehouse held by another process, as a running ingest holds it: `held_by_another_process`."""

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen]:
    """A process that holds a DuckDB connection to ``path`` (creating the file if it is missing) while the block
    runs, and is ended after it; the block gets the process."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
