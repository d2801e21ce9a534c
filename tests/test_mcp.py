"""``sessionlake mcp`` through the SDK's own stdio client: the server runs as a subprocess over a temp home
ingested by ``sessionlake ingest``; every tool is called and checked, and so is the provenance each recall leaves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from resources.memory.lance import LanceStore
from tests.conftest import SAMPLE_PROJECT, SAMPLES, writable_copy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PUSH_PROMPT = "ed356c9b-5106-4a60-b082-60e90997ce2b"
PUSH_ANSWER = "71df1268-cc05-4fd5-aa54-3c9f02765515"
PUSH_SESSION = "fed8ce56-bc79-401f-a83e-af084253362f"
CLIENT = "sessionlake-test-client"


def _cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "SESSIONLAKE_HOME": str(root / "home"), "SESSIONLAKE_SESSIONS_DIR": str(root / "projects"),
            "DAGSTER_HOME": str(root / "dagster"), "SESSIONLAKE_AGENTS": "claude"}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A data home with the samples ingested; the push-to-github session moved to today, so usage has a today."""
    root = tmp_path_factory.mktemp("mcp")
    projects = writable_copy(SAMPLES, root / "projects")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    moved = projects / SAMPLE_PROJECT / f"{PUSH_SESSION}.jsonl"
    moved.write_text(moved.read_text().replace('"timestamp":"2025-06-10T', f'"timestamp":"{today}T'))
    ingest = _cli("ingest", env=_env(root))
    assert ingest.returncode == 0, ingest.stderr
    return root


def _server_env(root: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in _env(root).items() if k.startswith(("SESSIONLAKE_", "DAGSTER_"))}
    return {**env, **extra}


async def _with_client(root: Path, body, **env):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp_types import Implementation

    params = StdioServerParameters(command=sys.executable, args=["-m", "pipelines.cli.main", "mcp"],
                                   env=_server_env(root, **env), cwd=str(REPO))
    async with Client(params, client_info=Implementation(name=CLIENT, version="1")) as client:
        return await body(client)


def _run(root: Path, body, **env):
    return asyncio.run(_with_client(root, body, **env))


def test_every_tool_answers_and_each_recall_leaves_provenance_naming_the_caller(home):
    async def body(client):
        listed = {t.name: t for t in (await client.list_tools()).tools}
        out = {"tools": listed}
        out["recall"] = await client.call_tool("recall", {"query": "push to github", "k": 3},
                                               meta={"sessionID": "agent-session-1"})
        out["anonymous"] = await client.call_tool("recall", {"query": "conda environment", "k": 2})
        hit = out["recall"].structured_content["hits"][0]
        out["context"] = await client.call_tool("context", {"handle": hit["handle"], "before": 0, "after": 2})
        out["capture"] = await client.call_tool("capture", {"text": "the walrus decision: keep packs per project"},
                                                meta={"sessionID": "agent-session-1"})
        out["usage"] = await client.call_tool("usage", {})
        out["bad query"] = await client.call_tool("recall", {"query": '"push to'})
        out["bad since"] = await client.call_tool("recall", {"query": "push", "since": "yesterday"})
        return out

    out = _run(home, body)
    assert set(out["tools"]) == {"recall", "context", "capture", "usage"}
    assert "text" not in out["recall"].structured_content["hits"][0]  # agents read on with context
    for tool in out["tools"].values():
        assert len(tool.description) > 80 and tool.input_schema["type"] == "object"
    assert set(out["tools"]["recall"].input_schema["properties"]) >= {"query", "k", "project", "agent", "since",
                                                                      "session", "role"}

    recalled = out["recall"].structured_content
    assert not out["recall"].is_error and recalled["caller"] == "agent-session-1"
    first = recalled["hits"][0]
    assert first["id"] == PUSH_PROMPT and first["rank"] == 1 and first["role"] == "user"
    assert (first["agent"], first["project"], first["session"]) == ("claude", SAMPLE_PROJECT, PUSH_SESSION)
    assert first["time"].endswith("Z") and first["score"] > 0 and "**push**" in first["snippet"]
    assert json.loads(out["recall"].content[0].text) == recalled  # the same hits as text, for clients without
    assert out["anonymous"].structured_content["caller"] == CLIENT

    ctx = out["context"].structured_content
    assert ctx["source"] == "memory" and ctx["hit"]["id"] == PUSH_PROMPT and ctx["before"] == []
    assert ctx["after"][0]["id"] == PUSH_ANSWER and ctx["after"][0]["role"] == "assistant"

    captured = out["capture"].structured_content
    envelope = json.loads((home / "home" / "capture" / f"pending-{captured['ulid']}.json").read_text())
    assert envelope["record"]["text"].startswith("the walrus decision")
    assert envelope["record"]["session_id"] == "agent-session-1" and captured["tier"] == "capture"

    usage = out["usage"].structured_content
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    daily = json.loads(_cli("usage", "daily", "--since", today, "--until", today, "--json", env=_env(home)).stdout)
    assert usage["today"]["tokens"]["total"] == daily["totals"]["totalTokens"] > 0
    assert usage["today"]["costUSD"] == pytest.approx(daily["totals"]["totalCost"])
    assert usage["month"]["tokens"]["total"] >= usage["today"]["tokens"]["total"]
    assert "block" in usage

    assert out["bad query"].is_error and "unclosed quote" in out["bad query"].content[0].text
    assert out["bad since"].is_error and "30m, 3h, 7d" in out["bad since"].content[0].text

    # the client has closed stdin: the server flushed its provenance queue before exiting
    store = LanceStore(home / "home" / "lance")
    named = [e["session_id"] for e in store.get(PUSH_PROMPT)["provenance"] if e["cue"] == "push to github"]
    assert named == ["agent-session-1"]
    hits = out["anonymous"].structured_content["hits"]
    assert all(CLIENT in [e["session_id"] for e in store.get(h["id"])["provenance"]] for h in hits)


def test_a_session_named_by_the_agent_environment_or_codex_metadata_is_the_caller(home):
    async def body(client):
        plain = await client.call_tool("recall", {"query": "github", "k": 1})
        codex = await client.call_tool("recall", {"query": "github", "k": 1},
                                       meta={"x-codex-turn-metadata": json.dumps({"session_id": "codex-thread-9"})})
        return plain.structured_content, codex.structured_content

    plain, codex = _run(home, body, CLAUDE_CODE_SESSION_ID="claude-session-7")
    assert plain["caller"] == "claude-session-7" and codex["caller"] == "codex-thread-9"
    store = LanceStore(home / "home" / "lance")
    entries = [e["session_id"] for e in store.get(plain["hits"][0]["id"])["provenance"]]
    assert "claude-session-7" in entries and "codex-thread-9" in entries


def test_stdout_holds_protocol_messages_only_and_the_server_loads_neither_dagster_nor_lancedb(home, tmp_path):
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    calls = [("recall", {"query": "x"}), ("usage", {"period": "?"}), ("context", {"handle": PUSH_PROMPT}),
             ("usage", {})]
    requests = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                *({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}}
                  for i, (name, args) in enumerate(calls, 2))]
    errors = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "pipelines.cli.main", "mcp"], cwd=REPO,
                            env=_server_env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                            text=True)
    for request in requests:  # one at a time: a reply before the next request, as a client waits for it
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        if "id" in request:
            reply = json.loads(proc.stdout.readline())
            assert reply["jsonrpc"] == "2.0" and reply["id"] == request["id"]
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stdout.read() == ""  # nothing after the replies: no log line, no warning
    proc.stdout.close()
    errors.seek(0)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in errors if line.startswith("import time:")}
    assert "mcp" in imported and "lance" in imported and not imported & {"dagster", "lancedb"}


def test_usage_reads_the_agents_files_first_as_every_report_does(home):
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    line = {"type": "assistant", "uuid": "5e55b00c-0000-4000-8000-000000000001", "sessionId": "5e55b00c-new",
            "timestamp": now, "requestId": "req_fresh_1", "cwd": "/Users/chip/dev/ai-music",
            "message": {"id": "msg_fresh_1", "role": "assistant", "model": "claude-sonnet-4-20250514",
                        "content": [{"type": "text", "text": "done"}],
                        "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}}}

    async def body(client):
        before = (await client.call_tool("usage", {"period": "today"})).structured_content
        (home / "projects" / SAMPLE_PROJECT / "5e55b00c-new.jsonl").write_text(json.dumps(line) + "\n")
        after = (await client.call_tool("usage", {"period": "today"})).structured_content
        return before, after

    before, after = _run(home, body)
    assert after["today"]["tokens"]["total"] - before["today"]["tokens"]["total"] == 1500
    assert after["warehouse"]["filesRead"] == 1 and after["warehouse"]["heldBy"] is None
    assert set(after) >= {"today", "warehouse"} and "month" not in after


def test_a_server_stopped_by_sigterm_still_writes_the_provenance_it_queued(home):
    import signal

    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "killer", "version": "1"}}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "mcp"], env=_server_env(home), cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for request in ({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
                    {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "recall", "arguments": {"query": "continue", "k": 1}}}):
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        if "id" in request:
            reply = json.loads(proc.stdout.readline())
    hit = reply["result"]["structuredContent"]["hits"][0]["id"]
    proc.send_signal(signal.SIGTERM)  # at once: the entry is still in the queue's coalescing window
    proc.wait(timeout=60)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        stream.close()
    entries = LanceStore(home / "home" / "lance").get(hit)["provenance"]
    assert ("continue", "killer") in [(e["cue"], e["session_id"]) for e in entries]


def test_recall_through_mcp_answers_while_an_ingest_and_a_maintenance_run_write_the_same_tables(home, tmp_path):
    root = tmp_path
    writable_copy(home / "projects", root / "projects")
    ingest = _cli("ingest", env=_env(root))  # a home of its own: this test adds to it
    assert ingest.returncode == 0, ingest.stderr
    new = root / "projects" / SAMPLE_PROJECT / "0badcafe-0000-4000-8000-000000000001.jsonl"
    lines, parent = [], None
    for i in range(400):
        uuid = f"0badcafe-0000-4000-8000-{i:012d}"
        lines.append(json.dumps({"parentUuid": parent, "isSidechain": False, "type": "user", "uuid": uuid,
                                 "sessionId": new.stem, "cwd": "/Users/chip/dev/ai-music",
                                 "timestamp": f"2025-07-01T10:{i // 60:02d}:{i % 60:02d}.000Z",
                                 "message": {"role": "user", "content": f"zanzibar note {i}: compaction window"}}))
        parent = uuid
    new.write_text("\n".join(lines) + "\n")

    async def recall_while(client, *command):
        writer = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", *command], env=_env(root), cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        answers = []
        while writer.poll() is None:
            answers.append(await client.call_tool("recall", {"query": "push to github", "k": 3}))
            await asyncio.sleep(0.05)
        out, err = writer.communicate()
        assert writer.returncode == 0, err
        return answers, out

    async def body(client):
        during_ingest, _ = await recall_while(client, "ingest")
        late = await client.call_tool("recall", {"query": "zanzibar", "k": 5})
        # compaction rewrites the tables recall reads (and the provenance its calls keep appending to)
        during_maintenance, report = await recall_while(client, "maintain", "--json")
        rewritten = sum(t["fragments_removed"] for t in json.loads(report).values() if isinstance(t, dict))
        assert rewritten > 0, "maintenance compacted nothing: the test would prove nothing"
        return during_ingest, late, during_maintenance

    started = time.monotonic()
    answers, late, maintained = _run(root, body)
    assert len(answers) >= 3, f"only {len(answers)} recalls in {time.monotonic() - started:.0f} s of ingest"
    for result in answers + maintained:
        assert not result.is_error and result.structured_content["hits"][0]["id"] == PUSH_PROMPT
    hits = late.structured_content["hits"]
    assert len(hits) == 5 and all("zanzibar" in h["snippet"] for h in hits)  # the ingest's commit, seen at once
