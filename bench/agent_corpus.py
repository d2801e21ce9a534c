"""A generated mixed ``$HOME`` for benchmarks: every supported agent's files where that agent keeps them.

``generate_agents(home, sessions)`` writes Claude Code (bench/corpus.py), Codex rollouts (cumulative
counts, each ``token_count`` re-emitted as Codex does), Gemini CLI ``.jsonl`` chats (each answer
appended twice, the first copy without tokens), one OpenCode database (some messages of two steps)
and Qwen Code chats (with the ``ui_telemetry`` copies of each response), and returns per agent the
totals a correct parser reports, in sessionlake's normal form (see resources/sources/base.py).
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.corpus import generate_corpus

SHARE = {"claude": 0.4, "codex": 0.2, "gemini": 0.15, "opencode": 0.15, "qwen": 0.1}
"""Share of the sessions per agent."""
TURNS = 12
START = datetime(2026, 3, 2, tzinfo=UTC)
_WORDS = "read the file then fix the failing test and explain the change in one short paragraph".split()


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _zero() -> dict:
    return {"responses": 0, "input": 0, "output": 0, "cache_creation": 0, "cache_read": 0, "extra_output": 0}


def generate_agents(home: Path | str, sessions: int = 2000, seed: int = 11) -> dict:
    """Write the agents' folders under ``home``; return ``{agent: totals}`` plus ``files`` and ``bytes``."""
    home = Path(home)
    rng = random.Random(seed)
    counts = {agent: max(1, round(sessions * share)) for agent, share in SHARE.items()}
    claude = generate_corpus(home / ".claude" / "projects", sessions=counts["claude"], projects=20, turns=TURNS)
    totals = {"claude": {"responses": counts["claude"] * TURNS, "input": claude["input"], "output": claude["output"],
                         "cache_creation": claude["cache_creation"], "cache_read": claude["cache_read"],
                         "extra_output": 0}}
    totals["codex"] = _codex(home / ".codex", counts["codex"], rng)
    totals["gemini"] = _gemini(home / ".gemini", counts["gemini"], rng)
    totals["opencode"] = _opencode(home / ".local" / "share" / "opencode", counts["opencode"], rng)
    totals["qwen"] = _qwen(home / ".qwen", counts["qwen"], rng)
    files = [p for p in home.rglob("*") if p.is_file()]
    return {"agents": totals, "sessions": counts, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _codex(root: Path, sessions: int, rng: random.Random) -> dict:
    t = _zero()
    for s in range(sessions):
        ts = START + timedelta(minutes=41 * s)
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        cwd = f"/home/dev/codex-{s % 8}"
        folder = root / "sessions" / f"{ts:%Y/%m/%d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [{"timestamp": _iso(ts), "type": "session_meta",
                  "payload": {"id": sid, "timestamp": _iso(ts), "cwd": cwd, "originator": "codex_cli_rs",
                              "cli_version": "0.50.0", "source": "cli", "model_provider": "openai",
                              "base_instructions": {"text": _text(rng, 400)}}},
                 {"timestamp": _iso(ts), "type": "event_msg", "payload": {"type": "token_count", "info": None}}]
        total = dict.fromkeys(("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
                               "total_tokens"), 0)
        model = ("gpt-5-codex", "gpt-5.3-codex")[s % 2]
        for _ in range(TURNS):
            ts += timedelta(seconds=rng.randint(5, 200))
            lines.append({"timestamp": _iso(ts), "type": "turn_context", "payload": {"cwd": cwd, "model": model}})
            lines.append({"timestamp": _iso(ts), "type": "event_msg",
                          "payload": {"type": "user_message", "message": _text(rng, 30)}})
            lines.append({"timestamp": _iso(ts), "type": "event_msg",
                          "payload": {"type": "agent_message", "message": _text(rng, 60)}})
            cached = rng.randint(0, 40_000)
            inp = cached + rng.randint(100, 8_000)
            reasoning = rng.randint(0, 600)
            out = reasoning + rng.randint(20, 1_500)
            last = {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out,
                    "reasoning_output_tokens": reasoning, "total_tokens": inp + out}
            total = {k: total[k] + last[k] for k in total}
            event = {"type": "token_count", "info": {"total_token_usage": dict(total), "last_token_usage": last,
                                                     "model_context_window": 272_000}}
            lines.append({"timestamp": _iso(ts), "type": "event_msg", "payload": event})
            lines.append({"timestamp": _iso(ts + timedelta(seconds=1)), "type": "event_msg", "payload": event})
            t["responses"] += 1
            t["input"] += inp - cached
            t["cache_read"] += cached
            t["output"] += out
        name = f"rollout-{ts:%Y-%m-%dT%H-%M-%S}-{sid}.jsonl"
        (folder / name).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return t


def _gemini(root: Path, sessions: int, rng: random.Random) -> dict:
    t = _zero()
    for s in range(sessions):
        slug = f"gem-app-{s % 6}"
        chats = root / "tmp" / slug / "chats"
        if not chats.exists():
            chats.mkdir(parents=True)
            (root / "tmp" / slug / ".project_root").write_text(f"/home/dev/{slug}\n")
        ts = START + timedelta(minutes=53 * s, seconds=17)
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        lines = [{"sessionId": sid, "projectHash": "0" * 64, "startTime": _iso(ts), "lastUpdated": _iso(ts),
                  "kind": "main"}]
        for n in range(TURNS):
            ts += timedelta(seconds=rng.randint(5, 200))
            lines.append({"id": f"u-{n}", "timestamp": _iso(ts), "type": "user", "content": [{"text": _text(rng, 30)}]})
            cached = rng.randint(0, 20_000)
            tokens = {"input": cached + rng.randint(100, 9_000), "output": rng.randint(10, 900), "cached": cached,
                      "thoughts": rng.randint(0, 400), "tool": 0}
            tokens["total"] = tokens["input"] + tokens["output"] + tokens["thoughts"]
            answer = {"id": f"g-{n}", "timestamp": _iso(ts), "type": "gemini", "content": _text(rng, 60),
                      "thoughts": [], "model": ("gemini-2.5-pro", "gemini-2.5-flash")[n % 2]}
            lines.append(answer)
            lines.append({**answer, "tokens": tokens})
            lines.append({"$set": {"lastUpdated": _iso(ts)}})
            t["responses"] += 1
            t["input"] += tokens["input"] - cached
            t["cache_read"] += cached
            t["output"] += tokens["output"]
            t["extra_output"] += tokens["thoughts"]
        (chats / f"session-{ts:%Y-%m-%dT%H-%M}-{sid[:8]}.jsonl").write_bytes(
            b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return t


def _opencode(root: Path, sessions: int, rng: random.Random) -> dict:
    t = _zero()
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "opencode.db")
    db.executescript("""
        CREATE TABLE session (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, parent_id TEXT, directory TEXT NOT NULL,
                              title TEXT NOT NULL, version TEXT NOT NULL, time_created INTEGER NOT NULL,
                              time_updated INTEGER NOT NULL);
        CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, time_created INTEGER NOT NULL,
                              time_updated INTEGER NOT NULL, data TEXT NOT NULL);
        CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL, session_id TEXT NOT NULL,
                           time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);""")
    models = (("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5"))
    for s in range(sessions):
        sid = f"ses_{s:08d}{rng.getrandbits(32):08x}"
        ms = int((START + timedelta(minutes=47 * s, seconds=29)).timestamp() * 1000)
        directory = f"/home/dev/oc-{s % 5}"
        db.execute("INSERT INTO session VALUES (?, ?, NULL, ?, ?, '1.2.0', ?, ?)",
                   [sid, f"proj{s % 5}", directory, "bench", ms, ms])
        for n in range(TURNS):
            ms += rng.randint(5_000, 200_000)
            user, answer = f"msg_{sid}_{n}_u", f"msg_{sid}_{n}_a"
            provider, model = models[(s + n) % 2]
            prompt = {"role": "user", "time": {"created": ms}, "model": {"providerID": provider, "modelID": model}}
            db.execute("INSERT INTO message VALUES (?, ?, ?, ?, ?)", [user, sid, ms, ms, _json(prompt)])
            db.execute("INSERT INTO part VALUES (?, ?, ?, ?, ?, ?)",
                       [f"prt_{user}", user, sid, ms, ms, _json({"type": "text", "text": _text(rng, 30)})])
            steps = 2 if n % 4 == 3 else 1  # a tool loop: two requests in one message
            cost, last = 0.0, None
            for k in range(steps):
                tokens = {"input": rng.randint(50, 3_000), "output": rng.randint(10, 800),
                          "reasoning": rng.randint(0, 200),
                          "cache": {"read": rng.randint(0, 30_000), "write": rng.randint(0, 4_000)}}
                step_cost = round((tokens["input"] * 3 + tokens["output"] * 15 + tokens["cache"]["read"] * 0.3
                                   + tokens["cache"]["write"] * 3.75) / 1e6, 6)
                cost += step_cost
                last = tokens
                step = {"type": "step-finish", "reason": "stop", "cost": step_cost, "tokens": tokens}
                db.execute("INSERT INTO part VALUES (?, ?, ?, ?, ?, ?)",
                           [f"prt_{answer}_s{k}", answer, sid, ms, ms, _json(step)])
                t["responses"] += 1
                t["input"] += tokens["input"]
                t["output"] += tokens["output"]
                t["extra_output"] += tokens["reasoning"]
                t["cache_read"] += tokens["cache"]["read"]
                t["cache_creation"] += tokens["cache"]["write"]
            db.execute("INSERT INTO part VALUES (?, ?, ?, ?, ?, ?)",
                       [f"prt_{answer}_t", answer, sid, ms, ms, _json({"type": "text", "text": _text(rng, 60)})])
            db.execute("INSERT INTO message VALUES (?, ?, ?, ?, ?)", [answer, sid, ms, ms, _json({
                "role": "assistant", "time": {"created": ms, "completed": ms + 900}, "parentID": user,
                "modelID": model, "providerID": provider, "path": {"cwd": directory, "root": directory},
                "cost": round(cost, 6), "tokens": last, "finish": "stop"})])
    db.commit()
    db.close()
    return t


def _json(obj: dict) -> str:
    return orjson.dumps(obj).decode()


def _qwen(root: Path, sessions: int, rng: random.Random) -> dict:
    t = _zero()
    for s in range(sessions):
        project = f"-home-dev-qwen-{s % 4}"
        chats = root / "projects" / project / "chats"
        chats.mkdir(parents=True, exist_ok=True)
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        ts = START + timedelta(minutes=59 * s, seconds=43)
        parent, lines = None, []
        common = {"sessionId": sid, "cwd": f"/home/dev/qwen-{s % 4}", "version": "0.18.1"}
        for _ in range(TURNS):
            ts += timedelta(seconds=rng.randint(5, 200))
            user = str(uuid.UUID(int=rng.getrandbits(128)))
            lines.append({"uuid": user, "parentUuid": parent, "timestamp": _iso(ts), "type": "user", **common,
                          "message": {"role": "user", "parts": [{"text": _text(rng, 30)}]}})
            cached = rng.randint(0, 10_000)
            usage = {"promptTokenCount": cached + rng.randint(100, 6_000), "candidatesTokenCount": rng.randint(10, 700),
                     "thoughtsTokenCount": rng.randint(0, 300), "cachedContentTokenCount": cached}
            usage["totalTokenCount"] = usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage[
                "thoughtsTokenCount"]
            telemetry = str(uuid.UUID(int=rng.getrandbits(128)))
            lines.append({"uuid": telemetry, "parentUuid": user, "timestamp": _iso(ts), "type": "system", **common,
                          "subtype": "ui_telemetry", "systemPayload": {"uiEvent": {
                              "event.name": "qwen-code.api_response", "model": "qwen3-coder-plus",
                              "input_token_count": usage["promptTokenCount"],
                              "output_token_count": usage["candidatesTokenCount"],
                              "cached_content_token_count": cached,
                              "thoughts_token_count": usage["thoughtsTokenCount"]}}})
            answer = str(uuid.UUID(int=rng.getrandbits(128)))
            lines.append({"uuid": answer, "parentUuid": telemetry, "timestamp": _iso(ts), "type": "assistant",
                          **common, "model": "qwen3-coder-plus", "usageMetadata": usage,
                          "message": {"role": "model", "parts": [{"text": _text(rng, 60)}]}})
            parent = answer
            t["responses"] += 1
            t["input"] += usage["promptTokenCount"] - cached
            t["cache_read"] += cached
            t["output"] += usage["candidatesTokenCount"]
            t["extra_output"] += usage["thoughtsTokenCount"]
        (chats / f"{sid}.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return t
