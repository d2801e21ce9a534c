"""Codex, Gemini CLI and OpenCode as sources: each adapter against the samples' known totals
(/work/shared/formats/samples/SOURCES.md, copied to tests/fixtures/agents), through the real
processors into a real DuckDB and Lance; re-reads never count twice; the CLI's --agent/--by-agent;
the session sensor seeing a Codex file change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import StateResource
from pipelines.defs.sessions.assets import STEP_NAME
from resources.archive.packs import PackStore
from resources.config.settings import Settings
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from resources.sources import found_sources, walk_all
from resources.state.migrations import LATEST_VERSION, MIGRATIONS
from resources.state.store import StateStore
from resources.usage.report_query import ReportOptions
from resources.usage.reports import usage_report
from tests.conftest import agent_settings

pytestmark = pytest.mark.integration

CODEX_DAY = ".codex/sessions/2026/02/23"
# ccusage's Codex session ids: the rollout's path under sessions/, without .jsonl
CODEX_A = "2026/02/23/rollout-2026-02-23T13-19-38-019c8a70-dda7-7f33-98ea-f30553347322"
CODEX_B = "2026/02/23/rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff"
TOTALS = """SELECT agent, session_id, count(*), sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens),
                   sum(output_tokens), sum(extra_output_tokens), round(sum(cost_usd), 6)
            FROM usage_messages GROUP BY ALL ORDER BY 1, 2"""
# (agent, session, rows, input not cached, cache read, cache write, output, extra output, cost from the file)
EXPECTED = [
    # SOURCES.md: 1 row, input 34,469 incl. 3,456 cached, output 431 incl. 264 reasoning
    ("codex", CODEX_A, 1, 31_013, 3_456, 0, 431, 0, None),
    # 6 rows (5 re-emits skipped), input 298,373 incl. 238,848 cached, output 1,123 incl. 483 reasoning
    ("codex", CODEX_B, 6, 59_525, 238_848, 0, 1_123, 0, None),
    # JSONL billing view: 4 rows, input 33,050 incl. 22,000 cached, output 83 + thoughts 150
    ("gemini", "5b0e8c1a-1111-4222-8333-944455556666", 4, 11_050, 22_000, 0, 83, 150, None),
    # legacy JSON: 2 rows, input 24,500 incl. 11,000 cached, output 140 + thoughts 300
    ("gemini", "a1b2c3d4-aaaa-4bbb-8ccc-ddddeeeeffff", 2, 13_500, 11_000, 0, 140, 300, None),
    # one row per step-finish part (3), the same session in the DB and in JSON storage counted once
    ("opencode", "ses_1a2b3c4d5ffeSYNTHETIC0001", 3, 2_100, 13_500, 6_000, 670, 200, 0.0496),
    # 2 assistant rows (the ui_telemetry copies not counted): prompt 1,100 incl. 50 cached, output 25
    ("qwen", "69f0814a-8bfc-4c8e-93d3-05757f17b96f", 2, 1_050, 50, 0, 25, 0, None),
]


def _settings(tmp_path: Path, home: Path) -> Settings:
    return agent_settings(tmp_path / "data", home)


def _env(tmp_path: Path, home: Path) -> dict:
    return {**os.environ, "SESSIONLAKE_HOME": str(tmp_path / "data"), "HOME": str(home),
            "SESSIONLAKE_SESSIONS_DIR": "", "DAGSTER_HOME": str(tmp_path / "dagster")}


def _ingest(settings: Settings, *processors) -> dict:
    files = list(walk_all(found_sources(settings)))
    return run_processors(processors, settings.sessions_dir, StateStore.from_settings(settings), files=files)


def _totals(settings: Settings) -> list[tuple]:
    with StateStore.from_settings(settings).connect() as conn:
        return [(*row[:8], None if row[8] is None else float(row[8])) for row in conn.execute(TOTALS).fetchall()]


def test_each_adapter_matches_the_samples_totals_through_the_processors(tmp_path, agent_home):
    settings = _settings(tmp_path, agent_home)
    assert [s.agent for s in found_sources(settings)] == ["codex", "gemini", "opencode", "qwen"], "no claude: skipped"
    lance, packs = LanceStore.from_settings(settings), PackStore.from_settings(settings)
    results = _ingest(settings, UsageProcessor(), MemoryProcessor(lance), ArchiveProcessor(packs))
    assert all(r["errors"] == 0 and r["lines_malformed"] == 0 for r in results.values()), results
    assert _totals(settings) == EXPECTED
    with StateStore.from_settings(settings).connect() as conn:
        projects = dict(conn.execute("SELECT DISTINCT agent, project FROM usage_messages "
                                     "WHERE agent <> 'codex'").fetchall())
        unpriced = conn.execute("SELECT DISTINCT model FROM usage_messages WHERE computed_cost_usd IS NULL").fetchall()
    assert projects["opencode"] == "opencode:-home-dev-my-app"  # the session's directory, from the DB or JSON
    # gpt-5.3-codex, gemini-2.5-*, gpt-5 and claude-sonnet-4-5 are priced; Qwen's sample ran against a mock model
    assert unpriced == [("coder-model",)]
    # memory: Codex user/agent messages (1+1, 1+6), Gemini prompts and answers (4 visible after the
    # rewind, 4 in the legacy file; tool-call-only answers have no text), OpenCode text parts (3, once),
    # Qwen's prompt and its one answer with text
    roles = {}
    for row in lance.records_where("session_key IS NOT NULL", ["session_key", "role"]):
        agent = row["session_key"].split(":", 1)[0]
        roles.setdefault(agent, []).append(row["role"])
    assert {a: len(r) for a, r in roles.items()} == {"codex": 9, "gemini": 8, "opencode": 3, "qwen": 2}
    assert sorted(roles["opencode"]) == ["assistant", "assistant", "user"]
    # the archive keeps every source file's bytes, under its project
    with StateStore.from_settings(settings).connect() as conn:
        archived = {r[0] for r in conn.execute("SELECT session_key FROM snapshots").fetchall()}
    assert archived == {f.key for f in walk_all(found_sources(settings))}


def test_rewritten_and_appended_files_are_read_again_without_double_counting(tmp_path, agent_home):
    settings = _settings(tmp_path, agent_home)
    _ingest(settings, UsageProcessor())
    # Gemini legacy JSON is rewritten in place: same messages, one more answer
    legacy = next((agent_home / ".gemini").rglob("session-2025-10-01*.json"))
    doc = json.loads(legacy.read_text())
    doc["messages"].append({"id": "m-6", "timestamp": "2025-10-01T09:01:00.000Z", "type": "gemini",
                            "content": "ok", "model": "gemini-2.5-pro",
                            "tokens": {"input": 100, "output": 10, "cached": 40, "thoughts": 0, "tool": 0}})
    legacy.write_text(json.dumps(doc, indent=1))
    # a Codex rollout grows by a re-emit of its last event plus one new request
    rollout = next((agent_home / CODEX_DAY).glob("*019c8a70*.jsonl"))
    last = [json.loads(line) for line in rollout.read_text().splitlines()
            if '"token_count"' in line and '"total_token_usage"' in line][-1]
    grown = json.loads(json.dumps(last))
    info = grown["payload"]["info"]
    info["last_token_usage"] = {"input_tokens": 1000, "cached_input_tokens": 900, "output_tokens": 50,
                                "reasoning_output_tokens": 0, "total_tokens": 1050}
    info["total_token_usage"] = {k: v + info["last_token_usage"][k] for k, v in info["total_token_usage"].items()}
    with open(rollout, "a") as f:
        f.write(json.dumps(last) + "\n" + json.dumps(grown) + "\n")
    # an OpenCode message file is rewritten with nothing new (its timestamp moves)
    message = next((agent_home / ".local/share/opencode/storage/message").rglob("msg_a000000003SYNTH.json"))
    message.write_text(message.read_text() + "\n")
    _ingest(settings, UsageProcessor())
    after = {row[1]: row for row in _totals(settings)}
    assert after[CODEX_A][2:8] == (2, 31_013 + 100, 3_456 + 900, 0, 431 + 50, 0)
    assert after["a1b2c3d4-aaaa-4bbb-8ccc-ddddeeeeffff"][2:8] == (3, 13_500 + 60, 11_000 + 40, 0, 150, 300)
    assert after["ses_1a2b3c4d5ffeSYNTHETIC0001"] == EXPECTED[4]
    assert after["5b0e8c1a-1111-4222-8333-944455556666"] == EXPECTED[2]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_usage_cli_filters_by_agent_and_breaks_rows_down_per_agent(tmp_path, agent_home):
    settings = _settings(tmp_path, agent_home)
    _ingest(settings, UsageProcessor())
    env = _env(tmp_path, agent_home)
    every = _cli(env, "usage", "daily", "--json")
    assert every.returncode == 0, every.stderr
    report = json.loads(every.stdout)
    assert {tuple(r["metadata"]["agents"]) for r in report["daily"]} == {
        ("gemini",), ("codex",), ("opencode",), ("qwen",)}
    assert all(r["agent"] == "all" for r in report["daily"])
    assert report["totals"]["inputTokens"] == sum(e[3] for e in EXPECTED)
    codex = json.loads(_cli(env, "usage", "daily", "--json", "--agent", "codex").stdout)
    assert [r["period"] for r in codex["daily"]] == ["2026-02-23"]
    assert codex["totals"]["outputTokens"] == 431 + 1_123
    by_agent = json.loads(_cli(env, "usage", "monthly", "--json", "--by-agent").stdout)
    [[breakdown]] = [r["agents"] for r in by_agent["monthly"] if r["period"] == "2026-02"]
    assert breakdown["agent"] == "codex" and breakdown["modelsUsed"] == ["gpt-5.3-codex"]
    assert set(breakdown) >= {"inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens",
                              "totalCost", "modelBreakdowns"} and "period" not in breakdown
    assert breakdown["totalTokens"] == 31_013 + 3_456 + 431 + 59_525 + 238_848 + 1_123
    sessions = json.loads(_cli(env, "usage", "session", "--json").stdout)["session"]
    assert sorted(r["agent"] for r in sessions) == ["codex", "codex", "gemini", "gemini", "opencode", "qwen"]
    table = _cli(env, "usage", "monthly", "--by-agent")
    assert table.returncode == 0 and "[codex]" in table.stdout and "[gemini]" in table.stdout
    claude = json.loads(_cli(env, "usage", "claude", "daily", "--json").stdout)
    assert claude["daily"] == [], "the claude view holds Claude Code's rows only"
    bad = _cli(env, "usage", "daily", "--agent", "cursor")
    assert bad.returncode == 2 and "expected one of" in bad.stderr


def test_blocks_count_thoughts_and_reasoning_in_total_tokens_as_every_other_report(tmp_path, agent_home):
    settings = _settings(tmp_path, agent_home)
    _ingest(settings, UsageProcessor())
    env = _env(tmp_path, agent_home)

    def block_totals(*args: str) -> tuple[list[int], dict]:
        result = _cli(env, "usage", "blocks", "--json", *args)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        return [b["totalTokens"] for b in report["blocks"] if not b["isGap"]], report

    # SOURCES.md's totals: input (cached included) + output + thoughts / reasoning reported apart
    # Gemini: JSONL 33,050 + 83 + 150 = 33,283; legacy JSON 24,500 + 140 + 300 = 24,940
    assert block_totals("--agent", "gemini")[0] == [24_940, 33_283]
    # Codex's reasoning is inside its output (34,469 + 431, 298,373 + 1,123): never added twice
    assert block_totals("--agent", "codex")[0] == [34_900, 299_496]
    # OpenCode: 2,100 input + 670 output + 200 reasoning + 13,500 cache reads + 6,000 cache writes
    assert block_totals("--agent", "opencode")[0] == [22_470]
    opencode, report = block_totals("--agent", "opencode")
    assert report["totals"]["totalTokens"] == sum(opencode)
    every, report = block_totals()  # Claude Code's billing windows only, and this home has no Claude Code
    assert every == [] and report["totals"]["totalTokens"] == 0


def test_the_sensor_sees_a_codex_file_change_under_its_own_partition(tmp_path, agent_home):
    settings = _settings(tmp_path, agent_home)
    resource = StateResource(home=str(settings.home), sessions_dir=str(settings.sessions_dir),
                             codex_home=str(settings.codex_home), gemini_dir=str(tmp_path / "none"),
                             opencode_dir=str(tmp_path / "none"), qwen_dir=str(tmp_path / "none"))
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                              resources={"state": resource}, repository_def=defs.get_repository_def())
            return defs.get_repository_def().get_sensor_def("session_files_sensor").evaluate_tick(context)

        first = tick()
        partitions = instance.get_dynamic_partitions(projects_partitions.name)
        assert sorted(partitions) == ["codex:-redacted-path-da0ba47443", "codex:-redacted-path-ea96e59ed9"]
        assert tick(first.cursor).run_requests == []
        rollout = next((agent_home / CODEX_DAY).glob("*019c8bfe*.jsonl"))
        with open(rollout, "a") as f:
            f.write(json.dumps({"timestamp": "2026-02-23T21:00:00.000Z", "type": "event_msg",
                                "payload": {"type": "agent_message", "message": "done"}}) + "\n")
        [request] = tick(first.cursor).run_requests
        assert request.run_config["ops"][STEP_NAME]["config"]["projects"] == ["codex:-redacted-path-ea96e59ed9"]


def test_agent_roots_default_the_way_ccusage_finds_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "data"))
    for name in ("CODEX_HOME", "GEMINI_CLI_HOME", "XDG_DATA_HOME", "SESSIONLAKE_AGENTS", "SESSIONLAKE_CODEX_DIR"):
        monkeypatch.delenv(name, raising=False)
    roots = Settings.from_env().agent_roots()
    assert (roots["codex"], roots["gemini"], roots["opencode"], roots["qwen"]) == (
        tmp_path / ".codex", tmp_path / ".gemini", tmp_path / ".local/share/opencode", tmp_path / ".qwen")
    monkeypatch.setenv("CODEX_HOME", f"{tmp_path}/c1,{tmp_path}/c2")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SESSIONLAKE_AGENTS", "claude,codex")
    roots = Settings.from_env().agent_roots()
    assert roots == {"claude": tmp_path / ".claude/projects", "codex": tmp_path / "c1"}


def test_an_existing_warehouse_keeps_its_claude_rows_and_keys(tmp_path):
    path = tmp_path / "state.duckdb"
    with duckdb.connect(str(path)) as conn:  # a warehouse written before other agents existed (version 6)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
        for version, statements in MIGRATIONS[:6]:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        conn.execute("""INSERT INTO usage_messages (dedup_key, ts, session_key, project, is_sidechain, input_tokens,
                            output_tokens, cache_creation_tokens, cache_read_tokens, line_offset)
                        VALUES ('m:r', '2025-06-10 10:00:00+00', '-home-me-app/s.jsonl', '-home-me-app', false,
                                5, 7, 0, 0, 0)""")
    store = StateStore(path)
    assert store.schema_version() == LATEST_VERSION
    with store.connect() as conn:
        assert conn.execute("SELECT agent, extra_output_tokens, project, session_key FROM usage_messages").fetchall() \
            == [("claude", 0, "-home-me-app", "-home-me-app/s.jsonl")]
        [row] = usage_report(conn, "daily", opts=ReportOptions(view="claude"))["daily"]
    assert (row["date"], row["inputTokens"], row["outputTokens"]) == ("2025-06-10", 5, 7)


@pytest.mark.parametrize("opencode_db", [True, False], ids=["with-opencode-db", "opencode-json-storage-only"])
def test_other_agents_memory_rebuilds_from_the_archive_after_their_files_are_gone(tmp_path, agent_home, opencode_db):
    if not opencode_db:  # OpenCode before v1.2: a text part is read with its message and session files
        for db in (agent_home / ".local/share/opencode").glob("*.db*"):
            db.unlink()
    settings = _settings(tmp_path, agent_home)
    _ingest(settings, MemoryProcessor(LanceStore.from_settings(settings)),
            ArchiveProcessor(PackStore.from_settings(settings)))
    before = sorted(r["id"] for r in LanceStore.from_settings(settings).records_where("TRUE", ["id"]))
    assert len([i for i in before if i.startswith("opencode:")]) == 3
    shutil.rmtree(settings.lance_dir / "records.lance" / "_versions")
    shutil.rmtree(agent_home)  # the agents deleted their files: only the archive has them
    env = {**_env(tmp_path, agent_home), "SESSIONLAKE_AGENTS": "claude"}
    rebuilt = _cli(env, "memory", "rebuild", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["errors"] == []
    # OpenCode's records come back from its database, or from its JSON storage restored as a tree
    assert sorted(r["id"] for r in LanceStore.from_settings(settings).records_where("TRUE", ["id"])) == before
