"""Prices from genai-prices' database: exact names and date-stamped aliases only, fast mode, long context,
1-hour cache writes, overrides, and `sessionlake prices`. Expected costs are worked out by hand from the
providers' list prices (USD per million tokens) and checked to the cent through the CLI."""

import json
import os
import shutil
import subprocess
import sys

import orjson
import pytest

from resources.usage.prices_ahead import PricesAhead
from resources.usage.pricing import PriceTable, database_prices
from tests.conftest import FIXTURES, SAMPLE_PROJECT

pytestmark = pytest.mark.integration

AGENT_SAMPLES = FIXTURES / "agents"

# One response's usage, the same for every model below (input + cache writes + reads = 194,000, under 200k).
SMALL = {"input_tokens": 10_000, "output_tokens": 20_000, "cache_creation_input_tokens": 100_000,
         "cache_read_input_tokens": 84_000,
         "cache_creation": {"ephemeral_5m_input_tokens": 60_000, "ephemeral_1h_input_tokens": 40_000}}
# The same with 100,000 more cache reads: 294,000 tokens of request input, over the 200k long-context threshold.
LARGE = {**SMALL, "cache_read_input_tokens": 184_000}

# session id -> (model as written, usage, timestamp, model as reported, expected USD)
# cost = input*10k + output*20k + 5m write*60k + 1h write*40k + read*84k (or 184k), per million.
CASES = {
    # Opus 4.6, $5 / $25 / $6.25 (5m) / $10 (1h) / $0.50: 0.05 + 0.5 + 0.375 + 0.4 + 0.042
    "opus-4-6": ("claude-opus-4-6", SMALL, "2026-02-20T10:00:00.000Z", "claude-opus-4-6", 1.367),
    # Opus 4.5 (dated id -> claude-opus-4-5), the same rates
    "opus-4-5": ("claude-opus-4-5-20251101", SMALL, "2026-02-20T10:00:00.000Z", "claude-opus-4-5-20251101", 1.367),
    # Sonnet 4.5, $3 / $15 / $3.75 / $6 / $0.30: 0.03 + 0.3 + 0.225 + 0.24 + 0.0252
    "sonnet-4-5": ("claude-sonnet-4-5-20250929", SMALL, "2026-02-20T10:00:00.000Z", "claude-sonnet-4-5-20250929",
                   0.8202),
    # Sonnet 4, the same rates
    "sonnet-4": ("claude-sonnet-4-20250514", SMALL, "2026-02-20T10:00:00.000Z", "claude-sonnet-4-20250514", 0.8202),
    # Haiku 4.5, $1 / $5 / $1.25 / $2 / $0.10: 0.01 + 0.1 + 0.075 + 0.08 + 0.0084
    "haiku-4-5": ("claude-haiku-4-5-20251001", SMALL, "2026-02-20T10:00:00.000Z", "claude-haiku-4-5-20251001",
                  0.2734),
    # Opus 4.6 fast mode, 6x: $30 / $150 / $37.50 / $60 / $3: 0.3 + 3 + 2.25 + 2.4 + 0.252
    "opus-4-6-fast": ("claude-opus-4-6", {**SMALL, "speed": "fast"}, "2026-02-20T10:00:00.000Z",
                      "claude-opus-4-6-fast", 8.202),
    # Sonnet 4.5 over 200k: every token at $6 / $22.50 / $7.50 / $12 / $0.60: 0.06 + 0.45 + 0.45 + 0.48 + 0.1104
    "sonnet-4-5-long": ("claude-sonnet-4-5-20250929", LARGE, "2026-02-20T10:00:00.000Z",
                        "claude-sonnet-4-5-20250929", 1.5504),
    # Opus 4.6 over 200k before 2026-03-13: $10 / $37.50 / $12.50 / $20 / $1: 0.1 + 0.75 + 0.75 + 0.8 + 0.184
    "opus-4-6-long-feb": ("claude-opus-4-6", LARGE, "2026-02-20T10:00:00.000Z", "claude-opus-4-6", 2.584),
    # ... and from 2026-03-13 on, when the whole window is billed at the standard rates: 0.05+0.5+0.375+0.4+0.092
    "opus-4-6-long-apr": ("claude-opus-4-6", LARGE, "2026-04-01T10:00:00.000Z", "claude-opus-4-6", 1.417),
    # A model no list names: never priced as claude-opus-4 ($15 / $75) by prefix
    "opus-4-9": ("claude-opus-4-9", SMALL, "2026-02-20T10:00:00.000Z", "claude-opus-4-9", 0.0),
}
# The sample sessions: Sonnet 4 only, 293 input, 19,313 output, 206,624 (5-minute) cache writes, 4,302,385
# reads: (293*3 + 19,313*15 + 206,624*3.75 + 4,302,385*0.3) / 1e6 = 2.3561295.
SAMPLE_COST = 2.36


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _write_cases(root):
    project = root / "-home-me-prices"
    project.mkdir()
    for session_id, (model, usage, ts, _, _) in CASES.items():
        line = {"type": "assistant", "uuid": f"u-{session_id}", "sessionId": session_id, "timestamp": ts,
                "requestId": f"req-{session_id}",
                "message": {"id": f"msg-{session_id}", "model": model, "usage": usage,
                            "content": [{"type": "text", "text": "ok"}]}}
        (project / f"{session_id}.jsonl").write_bytes(orjson.dumps(line) + b"\n")


def test_costs_to_the_cent_for_every_current_model_through_the_cli(settings, samples_root, tmp_path):
    _write_cases(samples_root)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    ingest = _cli("ingest", "--only", "usage", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr

    sessions = _cli("usage", "claude", "session", "--mode", "calculate", "--json", env=env)
    assert sessions.returncode == 0, sessions.stderr
    report = json.loads(sessions.stdout)
    by_id = {s["sessionId"]: s for s in report["sessions"]}
    for session_id, (_, _, _, reported_model, expected) in CASES.items():
        assert by_id[session_id]["modelsUsed"] == [reported_model], session_id
        assert round(by_id[session_id]["totalCost"], 2) == round(expected, 2), session_id
        assert by_id[session_id]["totalCost"] == pytest.approx(expected, abs=1e-9), session_id
    assert report["totals"]["unpricedModels"] == ["claude-opus-4-9"]
    assert "no price for model claude-opus-4-9" in sessions.stderr

    projects = json.loads(_cli("usage", "project", "--mode", "calculate", "--json", env=env).stdout)
    sample = next(p for p in projects["projects"] if p["project"] == SAMPLE_PROJECT)
    assert round(sample["totalCost"], 2) == SAMPLE_COST
    assert sample["totalCost"] == pytest.approx(2.3561295, abs=1e-9)

    listing = _cli("prices", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    got = {e["model"]: (e["source"], e["matched"], e["responses"]) for e in json.loads(listing.stdout)}
    assert got["claude-opus-4-6"] == ("database", "claude-opus-4-6", 3)
    assert got["claude-sonnet-4-20250514"] == ("alias", "claude-sonnet-4-0", 91)  # 90 sample responses + 1
    assert got["claude-opus-4-6-fast"] == ("supplement", "claude-opus-4-6-fast", 1)
    assert got["claude-opus-4-9"] == ("none", None, 1)
    assert "no price for model claude-opus-4-9" in listing.stderr


def test_override_file_wins_and_recosts_and_prices_shows_it(settings, samples_root, tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {
        "claude-sonnet-4": {"input": 6, "output": 30, "cache_write": 7.5, "cache_read": 0.6},
        "claude-opus-4-9": {"input": 5, "output": 25, "cache_write": 6.25, "cache_write_1h": 10, "cache_read": 0.5,
                            "long_context": {"above_tokens": 200_000, "input": 10, "output": 37.5,
                                             "cache_write": 12.5, "cache_write_1h": 20, "cache_read": 1}}}}))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", "--only", "usage", env=env).returncode == 0
    before = json.loads(_cli("usage", "--mode", "calculate", "--json", env=env).stdout)["totals"]["totalCost"]
    assert round(before, 2) == SAMPLE_COST

    env["SESSIONLAKE_PRICE_FILE"] = str(override)
    after = json.loads(_cli("usage", "--mode", "calculate", "--json", env=env).stdout)["totals"]["totalCost"]
    assert after == pytest.approx(2 * 2.3561295, abs=1e-9)  # every rate doubled; 1h writes default to 2x input

    shown = _cli("prices", "claude-sonnet-4-20250514", "claude-opus-4-9-20270101", "claude-opus-4-9", env=env)
    assert shown.returncode == 0, shown.stderr
    header, rule, *rows = shown.stdout.splitlines()
    assert set(rule) == {"-", " "}  # the one table printer's rule under the header
    lines = [header, *rows]
    assert lines[1].split()[:3] == ["claude-sonnet-4-20250514", "override", "claude-sonnet-4"]
    assert "$6 / $30 / $7.5 / $12 / $0.6" in lines[1]
    assert [ln.split()[:2] for ln in lines[2:]] == [["claude-opus-4-9-20270101", "override"]] * 2 + [
        ["claude-opus-4-9", "override"]] * 2
    assert "> 200,000" in lines[3] and "$10 / $37.5 / $12.5 / $20 / $1" in lines[3]

    override.write_text('{"models": {"x": {"input": "cheap"}}}')
    bad = _cli("prices", env=env)
    assert bad.returncode == 2 and "prices.json" in bad.stderr and "'x'" in bad.stderr
    unknown = _cli("prices", "claude-opus-4-10", env={**env, "SESSIONLAKE_PRICE_FILE": ""})
    assert unknown.returncode == 1 and "unpriced" in unknown.stdout and "claude-opus-4-10" in unknown.stderr


@pytest.mark.parametrize(("model", "source", "matched"), [
    ("claude-opus-4-6", "database", "claude-opus-4-6"),
    ("claude-opus-4-20250514", "database", "claude-opus-4-0"),  # the database lists this dated id itself
    ("claude-opus-4-1-20250805", "alias", "claude-opus-4-1"),
    ("claude-3-5-haiku-20241022", "alias", "claude-3-5-haiku-latest"),
    ("gpt-5", "database", "gpt-5"),
    ("gemini-2.5-pro", "database", "gemini-2.5-pro"),
    ("claude-opus-4-6-fast", "supplement", "claude-opus-4-6-fast"),
])
def test_names_match_exactly_or_as_a_date_stamped_alias(model, source, matched):
    price = PriceTable(overrides={}).lookup(model)
    assert (price.source, price.matched) == (source, matched)


@pytest.mark.parametrize("model", ["claude-opus-4-7-preview", "claude-opus-4-10", "claude-sonnet-4-9",
                                   "claude-haiku-4-5-fast", "claude", "<synthetic>", ""])
def test_no_family_prefix_or_guessed_fast_rate(model):
    assert PriceTable(overrides={}).lookup(model) is None


def test_prices_a_forked_process_loaded_are_the_prices_loaded_here():
    """A first report takes the database's prices from a process it forked (resources/usage/prices_ahead.py):
    every name the database lists, fast, date-stamped and provider-prefixed, gets the same price from it."""
    names = sorted(database_prices())
    models = [*names, *(f"{n}-fast" for n in names), *(f"{n}-20250514" for n in names),
              *(f"anthropic/{n}" for n in names), *(m for m, *_ in CASES.values()), "claude-opus-4-10", "<synthetic>"]
    ahead = PricesAhead.start()
    assert ahead is not None and ahead.prices() is not None  # it did not fail (a report would load them itself)
    here, there = PriceTable(overrides={}), PriceTable(overrides={}, database=ahead)
    assert [there.lookup(m) for m in models] == [here.lookup(m) for m in models]
    assert sum(here.lookup(m) is not None for m in models) > len(names)  # priced, not all None on both sides


def test_a_failed_or_unused_forked_load_leaves_prices_to_this_process():
    """A forked load that failed (None) leaves the database to this process; one never taken is ended and
    reaped when the report is done, not left running or as a zombie."""

    class Failed:
        def prices(self):
            return None

    assert PriceTable(overrides={}, database=Failed()).lookup("claude-opus-4-6") == \
        PriceTable(overrides={}).lookup("claude-opus-4-6")
    ahead = PricesAhead.start()
    ahead.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(ahead.pid, os.WNOHANG)


def test_provider_prefixed_model_ids_are_priced_as_the_model_they_name(tmp_path):
    home = tmp_path / "user"
    storage = home / ".local" / "share" / "opencode" / "storage"
    shutil.copytree(AGENT_SAMPLES / ".local" / "share" / "opencode" / "storage", storage)
    for path in storage.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for path in (storage / "message").rglob("*.json"):  # OpenCode's ids as it writes them through a router
        message = json.loads(path.read_text())
        if "modelID" in message:
            message["modelID"] = f"{message['providerID']}/{message['modelID']}"
            path.write_text(json.dumps(message))
    env = {**os.environ, "HOME": str(home), "SESSIONLAKE_HOME": str(tmp_path / "data"), "SESSIONLAKE_SESSIONS_DIR": "",
           "SESSIONLAKE_AGENTS": "opencode", "DAGSTER_HOME": str(tmp_path / "dagster")}
    ingest = _cli("ingest", "--only", "usage", env=env)
    assert ingest.returncode == 0, ingest.stderr

    daily = _cli("usage", "daily", "--mode", "calculate", "--json", env=env)
    assert daily.returncode == 0 and "no price" not in daily.stderr, daily.stderr
    report = json.loads(daily.stdout)
    assert "unpricedModels" not in report["totals"]
    costs = {b["modelName"]: b["cost"] for b in report["daily"][0]["modelBreakdowns"]}
    # claude-sonnet-4-5, $3 / $15 / $3.75 (write) per MTok: 1,200 input, 300 output, 6,000 cache writes
    assert costs["anthropic/claude-sonnet-4-5"] == pytest.approx((1_200 * 3 + 300 * 15 + 6_000 * 3.75) / 1e6)
    # gpt-5, $1.25 / $10 / $0.125 (read): 900 input, 370 output + 200 reasoning, 13,500 cache reads
    assert costs["openai/gpt-5"] == pytest.approx((900 * 1.25 + 570 * 10 + 13_500 * 0.125) / 1e6)

    shown = _cli("prices", "openai/gpt-5", "anthropic/claude-sonnet-4", "google/gemini-2.5-pro",
                 "openrouter/anthropic/claude-sonnet-4", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    got = {e["model"]: (e["source"], e["matched"]) for e in json.loads(shown.stdout)}
    assert got == {"openai/gpt-5": ("database", "gpt-5"),
                   "anthropic/claude-sonnet-4": ("database", "claude-sonnet-4-0"),
                   "google/gemini-2.5-pro": ("database", "gemini-2.5-pro"),
                   "openrouter/anthropic/claude-sonnet-4": ("database", "claude-sonnet-4-0")}
    unknown = _cli("prices", "acme/gpt-5", "openai/gpt-5-turbo-9", env=env)
    assert unknown.returncode == 1 and "acme/gpt-5" in unknown.stderr and "openai/gpt-5-turbo-9" in unknown.stderr
