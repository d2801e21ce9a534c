"""The usage warehouse: counted once per response, incremental, costed, and reported like ccusage."""

import json
from datetime import date

import orjson
import pytest

from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.usage.pricing import PriceTable
from resources.usage.report_query import ReportFilter
from resources.usage.reports import usage_report

pytestmark = pytest.mark.unit

SAMPLE_TOTALS = {"inputTokens": 293, "outputTokens": 19_313, "cacheCreationTokens": 206_624,
                 "cacheReadTokens": 4_302_385}


def _ingest(root, state, prices=None):
    return run_processors([UsageProcessor(prices)], root, state)["usage"]


def _totals(state, **flt):
    with state.connect() as conn:
        return usage_report(conn, "daily", ReportFilter(**flt))["totals"]


def _assistant(msg_id, req_id, ts, output, *, model="claude-sonnet-4-20250514", sidechain=False, extra=None):
    line = {"type": "assistant", "uuid": f"u-{msg_id}-{output}", "sessionId": "s1", "timestamp": ts,
            "isSidechain": sidechain, "requestId": req_id, "gitBranch": "main",
            "message": {"id": msg_id, "model": model, "content": [{"type": "text", "text": "hi"}],
                        "usage": {"input_tokens": 10, "output_tokens": output, "cache_creation_input_tokens": 100,
                                  "cache_read_input_tokens": 1000}}}
    line.update(extra or {})
    return line


def _append(path, *objs):
    with open(path, "ab") as f:
        for obj in objs:
            f.write(orjson.dumps(obj) + b"\n")


def test_sample_totals_match_the_hand_checked_figures_and_reingest_does_nothing(samples_root, state):
    first = _ingest(samples_root, state)
    assert first["processed"] == 4 and first["items_extracted"] == 90
    totals = _totals(state)
    assert {k: totals[k] for k in SAMPLE_TOTALS} == SAMPLE_TOTALS
    assert totals["totalTokens"] == sum(SAMPLE_TOTALS.values())
    second = _ingest(samples_root, state)
    assert second["processed"] == 0 and second["bytes_read"] == 0
    assert _totals(state) == totals


def test_appended_lines_are_read_alone_and_update_totals_without_duplicates(samples_root, state):
    _ingest(samples_root, state)
    path = next(samples_root.rglob("fed8ce56*.jsonl"))
    size = path.stat().st_size
    _append(path, _assistant("msg_new", "req_new", "2025-06-10T13:00:00.000Z", 7),
            _assistant("msg_new", "req_new", "2025-06-10T13:00:01.000Z", 500))
    stats = _ingest(samples_root, state)
    assert stats["processed"] == 1
    assert stats["bytes_read"] == path.stat().st_size - size
    totals = _totals(state)
    assert totals["inputTokens"] == SAMPLE_TOTALS["inputTokens"] + 10
    assert totals["outputTokens"] == SAMPLE_TOTALS["outputTokens"] + 500
    assert _ingest(samples_root, state)["processed"] == 0


def test_a_response_split_across_runs_keeps_its_final_output_count(tmp_path, state):
    path = tmp_path / "tree" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    _append(path, _assistant("m1", "r1", "2025-06-10T13:00:00.000Z", 3))
    _ingest(path.parent.parent, state)
    assert _totals(state)["outputTokens"] == 3
    _append(path, _assistant("m1", "r1", "2025-06-10T13:00:02.000Z", 400))
    _ingest(path.parent.parent, state)
    assert _totals(state)["outputTokens"] == 400


def test_rewritten_file_is_reprocessed_without_double_counting(samples_root, state):
    _ingest(samples_root, state)
    path = next(samples_root.rglob("d3ad4cdc*.jsonl"))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(reversed(lines)))  # same bytes, new order: a rewrite
    stats = _ingest(samples_root, state)
    assert stats["processed"] == 1 and stats["bytes_read"] == path.stat().st_size
    assert {k: _totals(state)[k] for k in SAMPLE_TOTALS} == SAMPLE_TOTALS


def test_counting_rules(tmp_path, state):
    path = tmp_path / "tree" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    ts = "2025-06-10T13:00:00.000Z"
    typeless = _assistant("m-old", "r-old", ts, 50)
    del typeless["type"]
    _append(
        path,
        _assistant("m1", "r1", ts, 900, sidechain=True),  # sidechain copy, bigger
        _assistant("m1", "r1", ts, 20),  # non-sidechain copy wins anyway
        {"type": "progress", "timestamp": ts, "data": {"message": _assistant("m-sub", "r-sub", ts, 777)},
         "message": None},
        {**_assistant("m-user", "r-user", ts, 999), "type": "user"},  # usage on a user line: not billed
        typeless,  # older writers omit type: counted
    )
    _ingest(path.parent.parent, state)
    with state.connect() as conn:
        rows = conn.execute("SELECT dedup_key, output_tokens, is_sidechain FROM usage_messages ORDER BY 1").fetchall()
    assert rows == [("m-old:r-old", 50, False), ("m1:r1", 20, False)]


def test_cost_modes_and_unpriced_models(tmp_path, state):
    path = tmp_path / "tree" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    ts = "2025-06-10T13:00:00.000Z"
    _append(path, _assistant("m1", "r1", ts, 1000, extra={"costUSD": 1.5}),
            _assistant("m2", "r2", ts, 1000),
            _assistant("m3", "r3", ts, 1000, model="mystery-model-9"))
    _ingest(path.parent.parent, state)
    # sonnet-4: 10*3 + 1000*15 + 100*3.75 + 1000*0.3 per million
    one = (10 * 3 + 1000 * 15 + 100 * 3.75 + 1000 * 0.3) / 1e6
    assert _totals(state, mode="calculate")["totalCost"] == pytest.approx(2 * one)
    assert _totals(state, mode="auto")["totalCost"] == pytest.approx(1.5 + one)
    assert _totals(state, mode="display")["totalCost"] == pytest.approx(1.5)
    with state.connect() as conn:
        assert usage_report(conn, "daily")["totals"]["unpricedModels"] == ["mystery-model-9"]


def test_price_override_file_recosts_stored_rows(samples_root, state, tmp_path):
    _ingest(samples_root, state)
    base = _totals(state)["totalCost"]
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {"claude-sonnet-4": {"input": 6, "output": 30, "cache_write": 7.5,
                                                                  "cache_read": 0.6}}}))
    with state.connect() as conn:
        recosted = usage_report(conn, "daily", prices=PriceTable.load(override))["totals"]["totalCost"]
    assert recosted == pytest.approx(2 * base)
    assert _totals(state)["totalCost"] == pytest.approx(2 * base)  # stored, not recomputed per report


def test_reports_apply_time_zone_and_date_filters(samples_root, state):
    _ingest(samples_root, state)
    with state.connect() as conn:
        utc = usage_report(conn, "daily")
        tokyo = usage_report(conn, "daily", ReportFilter(timezone="Asia/Tokyo"))
        only_10th = usage_report(conn, "daily", ReportFilter(since=date(2025, 6, 10), until=date(2025, 6, 10)))
        blocks = usage_report(conn, "blocks")
        sessions = usage_report(conn, "session")
    assert [d["period"] for d in utc["daily"]] == ["2025-06-08", "2025-06-10"]
    assert [d["period"] for d in tokyo["daily"]] == ["2025-06-08", "2025-06-10"]
    assert tokyo["totals"] == utc["totals"]
    assert [d["period"] for d in only_10th["daily"]] == ["2025-06-10"]
    assert only_10th["totals"]["outputTokens"] == utc["daily"][1]["outputTokens"]
    assert sum(b["entries"] for b in blocks["blocks"]) == 90
    assert all(b["startTime"].endswith(":00:00.000Z") for b in blocks["blocks"] if not b["isGap"])
    assert sum(s["totalTokens"] for s in sessions["session"]) == utc["totals"]["totalTokens"]
    assert all(set(s["metadata"]) == {"lastActivity"} for s in sessions["session"])  # as ccusage 20.0.24


def test_daily_json_has_ccusage_field_names(samples_root, state):
    _ingest(samples_root, state)
    with state.connect() as conn:
        report = usage_report(conn, "daily")
    day = report["daily"][0]
    for field in ("period", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens",
                  "totalCost", "modelsUsed", "modelBreakdowns"):
        assert field in day
    assert set(report["totals"]) >= {"inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens",
                                     "totalTokens", "totalCost"}
    assert day["modelBreakdowns"][0]["modelName"] == "claude-sonnet-4-20250514"


def _shuffled_warehouse(path, rows, seed):
    import random

    from resources.state.store import StateStore

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    store = StateStore(path)
    # each column as one JSON text: DuckDB binds a Python list value by value, trying to import pandas for each
    columns = [orjson.dumps(list(column)).decode() for column in zip(*rows, strict=True)]
    with store.connect() as conn:  # one statement, rows in the shuffled order (executemany is a statement per row)
        conn.execute(
            """INSERT INTO usage_messages (dedup_key, ts, session_key, project, model, is_sidechain, input_tokens,
                   output_tokens, cache_creation_tokens, cache_read_tokens, cost_usd, line_offset)
               SELECT unnest(?::JSON::VARCHAR[]), unnest(?::JSON::TIMESTAMPTZ[]), unnest(?::JSON::VARCHAR[]),
                      unnest(?::JSON::VARCHAR[]), unnest(?::JSON::VARCHAR[]), false, 1, 1, 0, 0,
                      unnest(?::JSON::DOUBLE[]), unnest(?::JSON::BIGINT[])""", columns)
    return store


def test_cost_totals_do_not_depend_on_the_order_rows_are_summed_in(tmp_path):
    """The same rows in three shuffled orders give the same totals to the last digit, by day and overall."""
    import random
    from datetime import UTC, datetime, timedelta

    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(f"k{i}", start + timedelta(hours=rng.randrange(24 * 90)), f"s{i % 97}", f"-p{i % 13}",
             f"model-{i % 5}", rng.random() * 10 ** rng.randrange(-4, 3), i) for i in range(3000)]
    reports = []
    for seed in range(3):
        store = _shuffled_warehouse(tmp_path / f"state-{seed}.duckdb", rows, seed)
        with store.connect() as conn:
            reports.append({kind: usage_report(conn, kind, ReportFilter(mode="display"))
                            for kind in ("daily", "monthly", "project", "model")})
    for kind in ("daily", "monthly", "project", "model"):
        assert reports[0][kind]["totals"]["totalCost"] == reports[1][kind]["totals"]["totalCost"] \
            == reports[2][kind]["totals"]["totalCost"], kind
        assert reports[0][kind] == reports[1][kind] == reports[2][kind], kind
    assert reports[0]["daily"]["totals"]["totalCost"] == pytest.approx(sum(r[5] for r in rows), rel=1e-12)
