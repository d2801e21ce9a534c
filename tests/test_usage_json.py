"""ccusage 20's JSON, exactly: expectations written by hand from ccusage 20.0.24's documented and
observed output for the same six responses (costs worked out from the price table by hand).

Prices per million tokens (input, output, cache write, cache read): claude-sonnet-4 3 / 15 / 3.75 / 0.30,
claude-opus-4 15 / 75 / 18.75 / 1.50, claude-3-5-haiku 0.80 / 4 / 1 / 0.08; mystery-model-9 has none.
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest

from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.usage.report_query import ReportOptions
from resources.usage.reports import session_usage, usage_report

pytestmark = pytest.mark.integration

SONNET, OPUS, HAIKU, MYSTERY = ("claude-sonnet-4-20250514", "claude-opus-4-20250514", "claude-3-5-haiku-20241022",
                                "mystery-model-9")
# (project, session, message id, timestamp, model, input, output, cache write, cache read)
RESPONSES = [
    ("-home-me-app", "s-app", "m1", "2026-01-10T09:15:00.000Z", SONNET, 100, 2000, 1000, 5000),  # $0.03555
    ("-home-me-app", "s-app", "m2", "2026-01-10T09:20:00.000Z", OPUS, 10, 500, 0, 0),  # $0.03765
    ("-home-me-app", "s-app", "m3", "2026-01-10T10:00:00.000Z", HAIKU, 50, 100, 0, 0),  # $0.00044
    ("-home-me-app", "s-app", "m4", "2026-01-12T00:30:00.000Z", MYSTERY, 5, 5, 0, 0),  # unpriced
    ("-home-me-api", "s-api", "n1", "2026-01-12T10:00:00.000Z", OPUS, 1000, 20000, 0, 0),  # $1.515
    ("-home-me-api", "s-api", "n2", "2026-01-12T10:30:00.000Z", SONNET, 100, 100, 0, 0),  # $0.0018
]
NOW = datetime(2026, 1, 12, 11, 0, tzinfo=UTC)  # the s-api block is active


def _line(session, msg_id, ts, model, inp, out, cw, cr):
    return {"type": "assistant", "uuid": f"u-{msg_id}", "sessionId": session, "timestamp": ts, "isSidechain": False,
            "requestId": f"r-{msg_id}", "gitBranch": "main",
            "message": {"id": msg_id, "model": model, "content": [{"type": "text", "text": "ok"}],
                        "usage": {"input_tokens": inp, "output_tokens": out, "cache_creation_input_tokens": cw,
                                  "cache_read_input_tokens": cr}}}


def _write(root, responses):
    for project, session, *rest in responses:
        path = root / project / f"{session}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(orjson.dumps(_line(session, *rest)) + b"\n")


@pytest.fixture
def warehouse(tmp_path, state):
    root = tmp_path / "tree"
    _write(root, RESPONSES)
    assert run_processors([UsageProcessor()], root, state)["usage"]["processed"] == 2
    return state


def _report(state, kind, **opts):
    with state.connect() as conn:
        return _rounded(usage_report(conn, kind, opts=ReportOptions(now=NOW, **opts)))


def _rounded(obj):
    """Floats to 9 places, so sums taken in another order compare equal."""
    if isinstance(obj, float):
        return round(obj, 9)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _bd(model, inp, out, cw, cr, cost, **extra):
    return {"cacheCreationTokens": cw, "cacheReadTokens": cr, "cost": cost, "inputTokens": inp, "modelName": model,
            "outputTokens": out, **extra}


TOTALS = {"cacheCreationTokens": 1000, "cacheReadTokens": 5000, "inputTokens": 1265, "outputTokens": 22705,
          "totalCost": 1.59044, "totalTokens": 29970, "unpricedModels": [MYSTERY]}


def test_daily_is_the_all_agent_shape(warehouse):
    assert _report(warehouse, "daily") == {
        "daily": [
            {"agent": "all", "cacheCreationTokens": 1000, "cacheReadTokens": 5000, "inputTokens": 160,
             "metadata": {"agents": ["claude"]},
             "modelBreakdowns": [_bd(OPUS, 10, 500, 0, 0, 0.03765), _bd(SONNET, 100, 2000, 1000, 5000, 0.03555),
                                 _bd(HAIKU, 50, 100, 0, 0, 0.00044)],
             "modelsUsed": [HAIKU, OPUS, SONNET], "outputTokens": 2600, "period": "2026-01-10", "responses": 3,
             "totalCost": 0.07364, "totalTokens": 8760},
            {"agent": "all", "cacheCreationTokens": 0, "cacheReadTokens": 0, "inputTokens": 1105,
             "metadata": {"agents": ["claude"]},
             "modelBreakdowns": [_bd(OPUS, 1000, 20000, 0, 0, 1.515), _bd(SONNET, 100, 100, 0, 0, 0.0018),
                                 _bd(MYSTERY, 5, 5, 0, 0, 0.0, missingPricing=True)],
             "modelsUsed": [OPUS, SONNET, MYSTERY], "outputTokens": 20105, "period": "2026-01-12", "responses": 3,
             "totalCost": 1.5168, "totalTokens": 21210},
        ],
        "totals": TOTALS,
    }


def test_claude_sessions_highest_cost_first_with_first_and_last_activity(warehouse):
    assert _report(warehouse, "session", view="claude") == {
        "sessions": [
            {"cacheCreationTokens": 0, "cacheReadTokens": 0, "firstActivity": "2026-01-12T10:00:00.000Z",
             "inputTokens": 1100, "lastActivity": "2026-01-12T10:30:00.000Z",
             "modelBreakdowns": [_bd(OPUS, 1000, 20000, 0, 0, 1.515), _bd(SONNET, 100, 100, 0, 0, 0.0018)],
             "modelsUsed": [OPUS, SONNET], "outputTokens": 20100, "projectPath": "-home-me-api", "responses": 2,
             "sessionId": "s-api", "totalCost": 1.5168, "totalTokens": 21200},
            {"cacheCreationTokens": 1000, "cacheReadTokens": 5000, "firstActivity": "2026-01-10T09:15:00.000Z",
             "inputTokens": 165, "lastActivity": "2026-01-12T00:30:00.000Z",
             "modelBreakdowns": [_bd(OPUS, 10, 500, 0, 0, 0.03765), _bd(SONNET, 100, 2000, 1000, 5000, 0.03555),
                                 _bd(HAIKU, 50, 100, 0, 0, 0.00044),
                                 _bd(MYSTERY, 5, 5, 0, 0, 0.0, missingPricing=True)],
             "modelsUsed": [SONNET, OPUS, HAIKU, MYSTERY], "outputTokens": 2605, "projectPath": "-home-me-app",
             "responses": 4, "sessionId": "s-app", "totalCost": 0.07364, "totalTokens": 8770},
        ],
        "totals": TOTALS,
    }


def test_all_agent_sessions_are_a_list_named_session_with_agent_and_metadata(warehouse):
    rows = _report(warehouse, "session")["session"]
    assert [(r["period"], r["agent"], r["metadata"]["lastActivity"]) for r in rows] == [
        ("s-api", "claude", "2026-01-12T10:30:00.000Z"), ("s-app", "claude", "2026-01-12T00:30:00.000Z")]
    assert rows[1]["modelsUsed"] == [SONNET, OPUS, HAIKU, MYSTERY]  # one agent's session: order of appearance
    assert [r["period"] for r in _report(warehouse, "session", order="asc")["session"]] == ["s-app", "s-api"]


def test_weeks_start_on_monday_for_all_agents_and_sunday_for_claude_unless_told(warehouse):
    def weeks(**opts):
        report = _report(warehouse, "weekly", **opts)["weekly"]
        return [(r.get("period") or r["week"], r["totalTokens"]) for r in report]

    assert weeks() == [("2026-01-05", 8760), ("2026-01-12", 21210)]
    # Sunday 2026-01-11 starts the week that holds Monday 00:30
    assert weeks(view="claude") == [("2026-01-04", 8760), ("2026-01-11", 21210)]
    assert weeks(view="claude", start_of_week="monday") == [("2026-01-05", 8760), ("2026-01-12", 21210)]
    assert weeks(start_of_week="saturday") == [("2026-01-10", 29970)]


def test_order_reverses_periods_and_claude_rows_use_date_month_week(warehouse):
    assert [r["date"] for r in _report(warehouse, "daily", view="claude", order="desc")["daily"]] == [
        "2026-01-12", "2026-01-10"]
    assert [r["month"] for r in _report(warehouse, "monthly", view="claude")["monthly"]] == ["2026-01"]
    assert "agent" not in _report(warehouse, "monthly", view="claude")["monthly"][0]


def test_instances_group_period_rows_by_project(warehouse):
    report = _report(warehouse, "daily", view="claude", instances=True)
    assert list(report) == ["projects", "totals"]
    assert {p: [(r["date"], r["project"], r["totalCost"], r["modelsUsed"]) for r in rows]
            for p, rows in report["projects"].items()} == {
        "-home-me-api": [("2026-01-12", "-home-me-api", 1.5168, [OPUS, SONNET])],
        "-home-me-app": [("2026-01-10", "-home-me-app", 0.07364, [SONNET, OPUS, HAIKU]),
                         ("2026-01-12", "-home-me-app", 0.0, [MYSTERY])],
    }
    assert report["totals"] == TOTALS


def test_blocks_have_gaps_and_the_active_block_has_burn_rate_and_projection(warehouse):
    empty = {"cacheCreationInputTokens": 0, "cacheReadInputTokens": 0, "inputTokens": 0, "outputTokens": 0}
    gap = {"actualEndTime": None, "burnRate": None, "costUSD": 0, "entries": 0, "isActive": False, "isGap": True,
           "models": [], "projection": None, "tokenCounts": empty, "totalTokens": 0}
    assert _report(warehouse, "blocks") == {
        "blocks": [
            {"actualEndTime": "2026-01-10T10:00:00.000Z", "burnRate": None, "costUSD": 0.07364,
             "endTime": "2026-01-10T14:00:00.000Z", "entries": 3, "id": "2026-01-10T09:00:00.000Z",
             "isActive": False, "isGap": False, "models": [SONNET, OPUS, HAIKU], "projection": None,
             "startTime": "2026-01-10T09:00:00.000Z",
             "tokenCounts": {"cacheCreationInputTokens": 1000, "cacheReadInputTokens": 5000, "inputTokens": 160,
                             "outputTokens": 2600},
             "totalTokens": 8760},
            {**gap, "id": "gap-2026-01-10T15:00:00.000Z", "startTime": "2026-01-10T15:00:00.000Z",
             "endTime": "2026-01-12T00:30:00.000Z"},
            {"actualEndTime": "2026-01-12T00:30:00.000Z", "burnRate": None, "costUSD": 0.0,
             "endTime": "2026-01-12T05:00:00.000Z", "entries": 1, "id": "2026-01-12T00:00:00.000Z",
             "isActive": False, "isGap": False, "models": [MYSTERY], "projection": None,
             "startTime": "2026-01-12T00:00:00.000Z", "tokenCounts": {**empty, "inputTokens": 5, "outputTokens": 5},
             "totalTokens": 10},
            {**gap, "id": "gap-2026-01-12T05:30:00.000Z", "startTime": "2026-01-12T05:30:00.000Z",
             "endTime": "2026-01-12T10:00:00.000Z"},
            # 21,200 tokens and $1.5168 over the 30 minutes from first to last entry; 240 minutes left
            {"actualEndTime": "2026-01-12T10:30:00.000Z",
             "burnRate": {"costPerHour": 3.0336, "tokensPerMinute": 706.666666667,
                          "tokensPerMinuteForIndicator": 706.666666667},
             "costUSD": 1.5168, "endTime": "2026-01-12T15:00:00.000Z", "entries": 2, "id": "2026-01-12T10:00:00.000Z",
             "isActive": True, "isGap": False, "models": [OPUS, SONNET],
             "projection": {"remainingMinutes": 240, "totalCost": 13.65, "totalTokens": 190800},
             "startTime": "2026-01-12T10:00:00.000Z",
             "tokenCounts": {**empty, "inputTokens": 1100, "outputTokens": 20100}, "totalTokens": 21200},
        ],
        "totals": TOTALS,
    }
    assert [b["id"][:13] for b in _report(warehouse, "blocks", order="desc")["blocks"]][:2] == [
        "2026-01-12T10", "gap-2026-01-1"]
    assert [b["id"] for b in _report(warehouse, "blocks", active=True)["blocks"]] == ["2026-01-12T10:00:00.000Z"]
    with warehouse.connect() as conn:  # two days later: nothing active, three days back reaches Jan 11
        later = usage_report(conn, "blocks", opts=ReportOptions(now=datetime(2026, 1, 14, tzinfo=UTC), recent=True))
    assert [b["id"] for b in later["blocks"]] == ["2026-01-12T00:00:00.000Z", "gap-2026-01-12T05:30:00.000Z",
                                                  "2026-01-12T10:00:00.000Z"]


def test_session_id_lists_its_responses(warehouse):
    with warehouse.connect() as conn:
        detail = _rounded(session_usage(conn, "s-api"))
        missing = session_usage(conn, "no-such-session")
    assert detail == {
        "entries": [
            {"cacheCreationTokens": 0, "cacheReadTokens": 0, "costUSD": 0.0, "inputTokens": 1000, "model": OPUS,
             "outputTokens": 20000, "timestamp": "2026-01-12T10:00:00.000Z"},
            {"cacheCreationTokens": 0, "cacheReadTokens": 0, "costUSD": 0.0, "inputTokens": 100, "model": SONNET,
             "outputTokens": 100, "timestamp": "2026-01-12T10:30:00.000Z"},
        ],
        "sessionId": "s-api", "totalCost": 1.5168, "totalTokens": 21200,
    }
    assert missing is None


def test_fast_model_ids_stay_apart_from_the_standard_model(tmp_path, state):
    root = tmp_path / "tree"
    _write(root, [("p", "s", "f1", "2026-01-10T09:00:00.000Z", "claude-opus-4-6-fast", 10, 10, 0, 0),
                  ("p", "s", "f2", "2026-01-10T09:01:00.000Z", "claude-opus-4-6", 10, 10, 0, 0)])
    run_processors([UsageProcessor()], root, state)
    day = _report(state, "daily", view="claude")["daily"][0]
    assert day["modelsUsed"] == ["claude-opus-4-6-fast", "claude-opus-4-6"]
    assert sorted(b["modelName"] for b in day["modelBreakdowns"]) == ["claude-opus-4-6", "claude-opus-4-6-fast"]
    assert _report(state, "blocks")["blocks"][0]["models"] == ["claude-opus-4-6-fast", "claude-opus-4-6"]


def _cli(*args, home):
    env = {**os.environ, "SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(home.parent / "tree")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_takes_ccusage_arguments(warehouse, settings):
    home = settings.home
    since = _cli("claude", "daily", "--json", "--since", "20260111", "--until", "2026-01-12", home=home)
    assert since.returncode == 0, since.stderr
    assert [d["date"] for d in json.loads(since.stdout)["daily"]] == ["2026-01-12"]
    assert "no price for model mystery-model-9" in since.stderr

    by_id = _cli("session", "--id", "s-app", "--json", home=home)  # ccusage's spelling of --session
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["totalTokens"] == 8770
    assert json.loads(_cli("session", "--session", "s-app", "--json", home=home).stdout) == json.loads(by_id.stdout)
    unknown = _cli("claude", "session", "-i", "nope", "-j", home=home)
    assert (unknown.returncode, unknown.stdout.strip()) == (1, "null")  # nothing found

    instances = _cli("claude", "daily", "-i", "-j", home=home)  # ccusage's short form
    assert list(json.loads(instances.stdout)["projects"]) == ["-home-me-api", "-home-me-app"]
    table = _cli("claude", "daily", "--instances", "--breakdown", "--project-aliases=-home-me-app=My App",
                 home=home)
    assert table.returncode == 0, table.stderr
    assert "[My App]" in table.stdout and "[-home-me-api]" in table.stdout
    assert f"  - {HAIKU}" in table.stdout

    for bad in (["claude", "fortnightly"], ["daily", "--id", "s-app"], ["weekly", "--start-of-week", "someday"],
                ["session", "-i"]):
        result = _cli(*bad, home=home)
        assert result.returncode == 2 and "usage:" in result.stderr
