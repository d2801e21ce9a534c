"""Two processes append provenance to the same records at once: every acknowledged entry is found once."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from resources.memory import maintenance as lm
from resources.memory.lance import LanceStore
from resources.memory.schema import PROVENANCE, new_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
RECORDS_SHARED = [f"r{i}" for i in range(5)]
ENTRIES_PER_PROCESS = 300

APPENDER = r"""
import sys, time
from pathlib import Path
from resources.ids import new_ulid
from resources.memory.lance import LanceStore
store = LanceStore(sys.argv[1])
name, go = sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
n, retried = 0, False
while n < int(sys.argv[4]):
    pairs = [(f"r{(n + j) % 5}", {"proc": name, "n": n + j}) for j in range(1 + n % 3)]
    ids = ids if retried else [new_ulid() for _ in pairs]
    try:
        store.append_provenance_batch(pairs, ids, retried=retried)
    except Exception as exc:  # not acknowledged: tried again with the same ids, so it cannot land twice
        print("error", type(exc).__name__, exc, file=sys.stderr, flush=True)
        retried = True
        continue
    retried = False
    print(" ".join(str(e["n"]) for _, e in pairs), flush=True)
    n += len(pairs)
"""


def test_two_processes_appending_to_the_same_records_lose_nothing_and_duplicate_nothing(tmp_path):
    store = LanceStore(tmp_path / "lance")
    store.upsert_records([new_record(rid, f"shared record {rid}", tier="episodic") for rid in RECORDS_SHARED])
    go = tmp_path / "go"
    procs = {name: subprocess.Popen([sys.executable, "-c", APPENDER, str(store.root), name, str(go),
                                     str(ENTRIES_PER_PROCESS)], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")}
    time.sleep(1.0)  # both imported lancedb and are waiting
    go.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = lm.optimize_lance_storage(store, timedelta(hours=1))  # compaction racing the appends
    outputs = {name: p.communicate(timeout=180) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][1]
    acknowledged = Counter((name, int(n)) for name, (out, _) in outputs.items() for n in out.split())
    assert sum(acknowledged.values()) >= 2 * ENTRIES_PER_PROCESS
    assert "error" not in report[PROVENANCE], report[PROVENANCE]

    entries = store.provenance_of(RECORDS_SHARED)
    found = Counter((e["proc"], e["n"]) for rid in RECORDS_SHARED for e in entries.get(rid, []))
    assert found.most_common(1)[0][1] == 1, "an entry was written twice"
    assert set(acknowledged) <= set(found), f"lost: {sorted(set(acknowledged) - set(found))[:10]}"
    assert store.count(PROVENANCE) == sum(found.values())
    for rid in RECORDS_SHARED:  # each process's entries keep their order per record
        for name in ("a", "b"):
            mine = [e["n"] for e in entries[rid] if e["proc"] == name]
            assert mine == sorted(mine)
