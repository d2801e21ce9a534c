"""Lance storage health (issue 5): the 10,841-version incident in miniature, three ways side by side.

7,000 records, then 10,000 small commits (provenance updates, events, new records, edges), applied
identically to (a) a store nobody maintains and (b) a store under sessionlake's health-sensor policy,
simulated in process; (c) is the same data fully compacted (each table written in one commit, indexes
built once) at every checkpoint, every eighth of the commits. At each checkpoint: versions, bytes on
disk, and the wall and CPU time a fresh process takes to open the tables and run a recall-style query
(full-text search, an id lookup, its provenance entries, a count over a non-indexed column of records
and of events), median of 5 processes per store, the stores taking turns.

The operation mix is 55% provenance appends to 1-3 records, 33% recall events, 7% new records, 5%
edges; each is one commit, plus one when an upsert leaves ``INDEX_DELTA_ROWS`` rows outside the
indexes (it indexes them as a new segment; in (b) maintenance usually has done so first).

Bytes written per provenance entry and per new record are measured apart, on a fresh store of the
seed size holding one provenance entry per record, with no maintenance: folder bytes before and
after 40 single-entry appends, 4 appends of 100 entries (a queue batch), and ``INDEX_DELTA_ROWS``
single-record upserts (so the index segment the last of them adds is counted, shared by all).

The policy runs on a simulated clock at the incident's rate (10,841 versions in 9 days, ~72 s per
commit): a sensor tick every ``sensor_min_interval_sec(settings)`` of simulated time applies
`threshold_breaches` at the `Settings` defaults and the periodic interval, and optimizes with
``settings.lance_optimize_retention_sec`` of simulated time, converted to the wall-clock age of the files
written that long ago in simulated time (Lance prunes by file age).

Run: ``python -m bench lance_health`` (``--quick``: 700 records, 1,000 commits).
"""

from __future__ import annotations

import bisect
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

BYTES_TARGET = 10.0
"""Issue 11's target for (b) vs (c); issue 5 aimed at 1.25x, which no retention-based policy reaches at this rate."""
QUERY_TARGET = 1.5
CHECKPOINTS = 8
"""Measured at every eighth of the commits: the cold ratio must hold between maintenance runs, not at one point."""
INCIDENT_SEC_PER_COMMIT = 9 * 86400 / 10_841
WORDS = ("lance dagster session memory recall vector index token cost branch model prompt answer "
         "compaction version manifest fragment schedule sensor provenance capture archive pack").split()

COLD_QUERY = r"""
import resource, sys, time, json
import lancedb
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
c0 = cpu()
t0 = time.perf_counter()
db = lancedb.connect(sys.argv[1])
records = db.open_table("records")
hits = records.search("compaction manifest", query_type="fts").select(["id"]).limit(10).to_list()
one = records.search().where("id = 'r17'").select(["id", "text"]).limit(1).to_list()
entries = db.open_table("provenance").search().where("record_id = 'r17'").select(["id", "entry"]).to_list()
live = records.count_rows("session_id = 'live'")
recalls = db.open_table("events").count_rows("kind = 'recall'")
edges = db.open_table("edges").count_rows()
print(json.dumps({"sec": time.perf_counter() - t0, "cpu_sec": cpu() - c0, "hits": len(hits), "one": len(one),
                  "recalls": recalls}))
"""


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))


class Workload:
    """A deterministic stream of small commits; ``step()`` applies the next one to every store."""

    def __init__(self, seed_records: int, stores, seed: int = 5):
        self.rng = random.Random(seed)
        self.next_id = seed_records
        self.seed_records = seed_records
        self.stores = stores
        self.write_sec = [0.0] * len(stores)
        """Wall time each store spent in its writes: what a writer feels."""

    def seed(self) -> None:
        from resources.memory.schema import new_record

        rng = random.Random(1)
        rows = [new_record(f"r{i}", _text(rng), tier="episodic", session_id=f"s{i % 97}")
                for i in range(self.seed_records)]
        for store in self.stores:
            store.upsert_records(rows)

    def _next_op(self):
        from resources.memory.events import write_event
        from resources.memory.schema import new_edge, new_record

        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            pairs = [(f"r{rng.randrange(self.next_id)}", {"query": _text(rng)[:40], "rank": rng.randint(1, 10)})
                     for _ in range(rng.randint(1, 3))]
            return (lambda store: store.append_provenance_batch(pairs)), 1
        if roll < 0.88:
            data = {"query": _text(rng)[:60], "hits": rng.randint(0, 10)}
            return (lambda store: write_event(store, "recall", data)), 1
        if roll < 0.95:
            row = new_record(f"r{self.next_id}", _text(rng), tier="episodic", session_id="live")
            self.next_id += 1
            return (lambda store: store.upsert_records([row])), 1
        edge = new_edge(f"r{rng.randrange(self.next_id)}", f"r{rng.randrange(self.next_id)}", "related")
        return (lambda store: store.upsert_edges([edge])), 1

    def step(self) -> int:
        """Apply one operation to every store; returns the commits it made."""
        apply, commits = self._next_op()
        for i, store in enumerate(self.stores):
            started = time.perf_counter()
            apply(store)
            self.write_sec[i] += time.perf_counter() - started
        return commits


class SensorPolicy:
    """The health sensor's decisions on a simulated clock (see the module docstring)."""

    def __init__(self, store, settings):
        from pipelines.defs.lance.assets import sensor_min_interval_sec
        from resources.memory import maintenance as lm

        self.lm, self.store, self.settings = lm, store, settings
        self.tick_every_sim = float(sensor_min_interval_sec(settings))
        self.started = time.time()
        self.sim_now = 0.0
        self.sim_times, self.wall_times = [0.0], [self.started]
        """Simulated and wall time after each step: maps a simulated age to a file age."""
        self.last_tick_sim = -1.0
        self.last_run_sim = None
        self.runs: dict[str, int] = {}
        self.optimize_sec = 0.0
        self.tick_sec = 0.0
        self.errors: list[str] = []

    def retention_wall_sec(self) -> float:
        """The wall-clock age that files written ``lance_optimize_retention_sec`` simulated seconds ago have.

        Mapping through the timeline (not a constant speed-up) keeps checkpoint pauses, which add
        wall time but no commits, from ageing the history.
        """
        cutoff = self.sim_now - self.settings.lance_optimize_retention_sec
        if cutoff <= 0:
            return time.time() - self.started + 1.0
        index = bisect.bisect_right(self.sim_times, cutoff) - 1
        return time.time() - self.wall_times[index]

    def advance(self, commits: int) -> None:
        self.sim_now += commits * INCIDENT_SEC_PER_COMMIT
        self.sim_times.append(self.sim_now)
        self.wall_times.append(time.time())
        if self.sim_now - self.last_tick_sim < self.tick_every_sim:
            return
        self.last_tick_sim = self.sim_now
        started = time.perf_counter()
        retention = self.retention_wall_sec()
        phase = self._due_phase(retention)
        self.tick_sec += time.perf_counter() - started
        if phase is None:
            return
        started = time.perf_counter()
        report = self.lm.optimize_lance_storage(self.store, timedelta(seconds=retention), phase)
        self.optimize_sec += time.perf_counter() - started
        self.errors += [e["error"] for e in report.values() if "error" in e]
        self.runs[phase] = self.runs.get(phase, 0) + 1
        self.last_run_sim = self.sim_now


    def _due_phase(self, retention_wall_sec: float) -> str | None:
        lm = self.lm
        if self.last_run_sim is None:
            return "startup"
        health = lm.measure_store(self.store, retention_sec=retention_wall_sec)
        if lm.threshold_breaches(health, self.settings.lance_versions_threshold,
                                 self.settings.lance_small_fragments_threshold):
            return "threshold"
        if self.sim_now - self.last_run_sim >= self.settings.lance_optimize_interval_sec:
            return "periodic"
        return None


def _ideal_copy(source, dest: Path):
    """(c): every table of ``source`` written in one commit, then its indexes built once."""
    from resources.memory.lance import LanceStore
    from resources.memory.schema import TABLE_NAMES

    ideal = LanceStore(dest)
    for name in TABLE_NAMES:
        data = source.open_table(name).to_arrow()
        ideal.db.create_table(name, data, mode="overwrite")
        ideal.refresh_indexes(name)
    return ideal


def _cold_query_sec(paths: list[Path], reps: int = 5) -> tuple[list[float], list[float]]:
    """Median cold open + query wall time and CPU time per store; the stores take turns, so a burst of
    load on the shared machine falls on all of them rather than on whichever was being measured. CPU
    time (every thread of the process) is what load changes least."""
    times: list[list[float]] = [[] for _ in paths]
    cpu: list[list[float]] = [[] for _ in paths]
    for _ in range(reps):
        for i, path in enumerate(paths):
            out = subprocess.run([sys.executable, "-c", COLD_QUERY, str(path)], capture_output=True, text=True,
                                 timeout=600, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if not result["hits"] or not result["one"]:
                raise AssertionError(f"cold query on {path} found nothing: {result}")
            times[i].append(result["sec"])
            cpu[i].append(result["cpu_sec"])
    return [statistics.median(t) for t in times], [statistics.median(t) for t in cpu]


def _shape(store) -> tuple[int, int]:
    from resources.memory import maintenance as lm
    from resources.memory.schema import TABLE_NAMES

    health = [lm.measure_table(store, name) for name in TABLE_NAMES]
    return sum(h.versions for h in health), sum(h.size_bytes for h in health)


def _content(store) -> dict[str, list[tuple]]:
    """What a user would miss if it were lost: records with text, provenance entries, edges, recall events.

    Event and provenance ids are fresh ULIDs per store and (b) also logs its optimize events, so events
    compare by payload and provenance by (record, entry).
    """
    def rows(name, columns, where=None):
        query = store.open_table(name).search().select(columns).limit(None)
        table = (query.where(where) if where else query).to_arrow()
        return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))

    return {"records": rows("records", ["id", "text"]), "provenance": rows("provenance", ["record_id", "entry"]),
            "edges": rows("edges", ["id", "src", "dst"]), "events": rows("events", ["data"], "kind = 'recall'")}


def _lost_or_duplicated(expected: dict[str, list[tuple]], got: dict[str, list[tuple]]) -> int:
    from collections import Counter

    return sum(((Counter(expected[t]) - Counter(got[t])) + (Counter(got[t]) - Counter(expected[t]))).total()
               for t in expected)


def _bytes_by_folder(store) -> dict[str, int]:
    """Where (b)'s bytes are: data files, index files, manifests, transactions, deletion files."""
    from resources.memory.maintenance import folder_bytes

    out: dict[str, int] = {}
    for table in Path(store.root).glob("*.lance"):
        for folder in table.iterdir():
            if folder.is_dir():
                out[folder.name] = out.get(folder.name, 0) + folder_bytes(folder)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def bytes_per_write(root: Path, seed_records: int) -> dict[str, float]:
    """Bytes on disk added per provenance entry (alone, and in a batch of 100) and per new record."""
    from resources.memory.lance import LanceStore
    from resources.memory.maintenance import folder_bytes, table_dir
    from resources.memory.schema import INDEX_DELTA_ROWS, TABLE_NAMES, new_record

    store = LanceStore(root)
    Workload(seed_records, [store]).seed()
    rng = random.Random(3)

    def added(writes: int, write) -> float:
        before = sum(folder_bytes(table_dir(store, n)) for n in TABLE_NAMES)
        for i in range(writes):
            write(i)
        return (sum(folder_bytes(table_dir(store, n)) for n in TABLE_NAMES) - before) / writes

    def entry(i: int) -> dict:  # what recall writes: a distinct ts and cue per entry
        return {"ts": f"2025-06-08T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 997:06d}+00:00",
                "cue": _text(rng)[:40], "session_id": f"bench-{i % 7}"}

    store.append_provenance_batch([(f"r{i}", entry(i)) for i in range(seed_records)])  # history to carry
    return {
        "provenance entry, one per commit": added(40, lambda i: store.append_provenance_batch(
            [(f"r{rng.randrange(seed_records)}", entry(i))])),
        "provenance entry, 100 per commit (a queue batch)": added(4, lambda i: store.append_provenance_batch(
            [(f"r{rng.randrange(seed_records)}", entry(i * 100 + j)) for j in range(100)])) / 100,
        "new record, one per commit": added(INDEX_DELTA_ROWS, lambda i: store.upsert_records(
            [new_record(f"new{i}", _text(rng), tier="episodic", session_id="live")])),
    }


def _row(metric, value, unit, baseline=None, target=None, limit=None):
    ratio = None if baseline in (None, 0) else round(value / baseline, 3)
    ok = None if limit is None or ratio is None else ratio <= limit
    return {"metric": metric, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "target": target, "ok": ok}


def run(quick: bool) -> list[dict]:
    from resources.config.settings import Settings
    from resources.memory.lance import LanceStore

    warnings.filterwarnings("ignore", message="optimize")
    seed_records, commits = (700, 1_000) if quick else (7_000, 10_000)
    checkpoints = [commits * k // CHECKPOINTS for k in range(1, CHECKPOINTS + 1)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-lance-health-") as tmp:
        root = Path(tmp)
        plain, kept = LanceStore(root / "a"), LanceStore(root / "b")
        settings = Settings(home=root / "unused", sessions_dir=root / "unused")
        workload = Workload(seed_records, [plain, kept])
        workload.seed()
        policy = SensorPolicy(kept, settings)
        policy.advance(0)
        done, started = 0, time.perf_counter()
        for checkpoint in checkpoints:
            written = list(workload.write_sec)
            while done < checkpoint:
                made = workload.step()
                done += made
                policy.advance(made)
            wa, wb = (now - before for now, before in zip(workload.write_sec, written, strict=True))
            expected = _content(plain)
            wrong = _lost_or_duplicated(expected, _content(kept))
            ideal = _ideal_copy(plain, root / f"c{checkpoint}")
            (va, ba), (vb, bb), (vc, bc) = _shape(plain), _shape(kept), _shape(ideal)
            (qa, qb, qc), (ca, cb, cc) = _cold_query_sec([plain.root, kept.root, ideal.root])
            label = f"@{checkpoint:,} commits"
            rows += [
                _row(f"{label} versions (b) sensor vs (c) ideal", vb, "versions", vc),
                {"metric": f"{label} versions (a) no maintenance", "value": va, "unit": "versions",
                 "baseline": vb, "ratio": round(va / vb, 2), "target": None, "ok": None},
                _row(f"{label} bytes (b) sensor vs (c) ideal", bb, "bytes", bc, f"<= {BYTES_TARGET}x", BYTES_TARGET),
                _row(f"{label} cold open+query (b) sensor vs (c) ideal", round(qb, 4), "s", round(qc, 4),
                     f"<= {QUERY_TARGET}x", QUERY_TARGET),
                _row(f"{label} cold open+query CPU (b) sensor vs (c) ideal", round(cb, 4), "s", round(cc, 4),
                     f"<= {QUERY_TARGET}x", QUERY_TARGET),
                _row(f"{label} bytes (a) none vs (b) sensor: what maintenance buys", ba, "bytes", bb),
                _row(f"{label} cold open+query (a) none vs (b) sensor", round(qa, 4), "s", round(qb, 4)),
                _row(f"{label} write time of the last {commits // CHECKPOINTS:,} commits (a) none vs (b) sensor",
                     round(wa, 2), "s", round(wb, 2)),
                {"metric": f"{label} rows lost, changed or duplicated under (b)", "value": wrong, "unit": "rows",
                 "baseline": sum(len(v) for v in expected.values()), "ratio": None, "target": "0",
                 "ok": wrong == 0},
            ]
            print(f"  {label}: versions a/b/c {va}/{vb}/{vc}, MB a/b/c {ba / 1e6:.1f}/{bb / 1e6:.1f}/{bc / 1e6:.1f}, "
                  f"cold s a/b/c {qa:.3f}/{qb:.3f}/{qc:.3f} (CPU {ca:.3f}/{cb:.3f}/{cc:.3f}), runs {policy.runs} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
        rows += [{"metric": f"bytes written per {what}", "value": round(size), "unit": "bytes", "baseline": None,
                  "ratio": None, "target": None, "ok": None}
                 for what, size in bytes_per_write(root / "per-write", seed_records).items()]
        rows += [{"metric": f"(b) bytes in {folder}/ at the end", "value": size, "unit": "bytes", "baseline": None,
                  "ratio": None, "target": None, "ok": None} for folder, size in _bytes_by_folder(kept).items()]
        rows += [
            {"metric": "sensor runs by phase (b)", "value": sum(policy.runs.values()), "unit": "runs",
             "baseline": None, "ratio": None, "target": json.dumps(policy.runs), "ok": None},
            {"metric": "time spent in sensor ticks (b)", "value": round(policy.tick_sec, 2), "unit": "s",
             "baseline": None, "ratio": None, "target": None, "ok": None},
            {"metric": "time spent optimizing (b)", "value": round(policy.optimize_sec, 2), "unit": "s",
             "baseline": None, "ratio": None, "target": None, "ok": None},
            {"metric": "optimize errors (b)", "value": len(policy.errors), "unit": "tables", "baseline": None,
             "ratio": None, "target": "0", "ok": not policy.errors},
        ]
    return rows
