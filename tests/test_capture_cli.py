"""``sessionlake capture`` as hooks run it: a fresh process, stdin in, ULID out, nothing heavy imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.capture.queue import CaptureQueue

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def capture(home: Path, *args: str, stdin: str | bytes | None = None, env: dict | None = None):
    environ = {**os.environ, "SESSIONLAKE_HOME": str(home), **(env or {})}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", "capture", *args], cwd=REPO, env=environ,
                          input=data if data is not None else b"", capture_output=True, timeout=60)


def records(home: Path) -> list[dict]:
    return [json.loads(p.read_bytes())["record"] for p in CaptureQueue(home / "capture").list_pending()]


def test_json_record_on_stdin(tmp_path):
    done = capture(tmp_path, stdin=json.dumps({"text": "remember: deploys go through staging", "role": "note"}))
    assert done.returncode == 0, done.stderr
    ulid = done.stdout.decode().strip()
    assert len(ulid) == 26
    [path] = CaptureQueue(tmp_path / "capture").list_pending()
    assert path.name == f"pending-{ulid}.json"
    [record] = records(tmp_path)
    assert record["text"] == "remember: deploys go through staging" and record["role"] == "note"
    assert record["tier"] == "capture" and record["timestamp"]


def test_a_bad_bucket_setting_does_not_lose_the_record(tmp_path):
    """Capture only appends to the local inbox: a storage or team URI it cannot use is the drain's problem."""
    done = capture(tmp_path, "--text", "kept", env={"SESSIONLAKE_STORAGE_URI": "ftp://x/y",
                                                    "SESSIONLAKE_TEAM_URI": "s3://"})
    assert done.returncode == 0, done.stderr
    assert [r["text"] for r in records(tmp_path)] == ["kept"]


def test_text_tier_and_session_flags(tmp_path):
    done = capture(tmp_path, "--text", "Привет 😀 ∑", "--tier", "semantic", "--session", "s-42")
    assert done.returncode == 0, done.stderr
    old_spelling = capture(tmp_path, "--text", "again", "--session-id", "s-43")  # scripts written before --session
    assert old_spelling.returncode == 0, old_spelling.stderr
    by_session = {r["session_id"]: r for r in records(tmp_path)}
    assert by_session.keys() == {"s-42", "s-43"} and by_session["s-43"]["text"] == "again"
    record = by_session["s-42"]
    assert record["text"] == "Привет 😀 ∑" and record["tier"] == "semantic"


def test_user_prompt_submit_hook(tmp_path):
    payload = {"session_id": "abc-123", "transcript_path": "/home/u/.claude/projects/-work-shop/abc-123.jsonl",
               "cwd": "/work/shop", "permission_mode": "default", "hook_event_name": "UserPromptSubmit",
               "prompt": "why does the checkout test flake?"}
    done = capture(tmp_path, "--from-hook", stdin=json.dumps(payload))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""  # Claude Code would paste stdout into the prompt
    assert len(done.stderr.decode().strip()) == 26
    [record] = records(tmp_path)
    assert record["text"] == "why does the checkout test flake?" and record["role"] == "user"
    assert record["session_id"] == "abc-123" and record["project"] == "-work-shop"
    assert record["source"] == "claude-code:UserPromptSubmit" and record["tier"] == "capture"


def test_stop_hook_captures_the_last_answer(tmp_path):
    payload = {"session_id": "abc", "hook_event_name": "Stop", "stop_hook_active": False,
               "last_assistant_message": "The flake came from a shared tmp dir."}
    done = capture(tmp_path, "--from-hook", stdin=json.dumps(payload))
    assert done.returncode == 0, done.stderr
    [record] = records(tmp_path)
    assert record["text"] == "The flake came from a shared tmp dir." and record["role"] == "assistant"


@pytest.mark.parametrize("payload", [
    {"hook_event_name": "SessionStart", "session_id": "abc", "source": "startup"},
    {"hook_event_name": "Stop", "session_id": "abc", "stop_hook_active": False},
])
def test_hook_event_without_text_writes_nothing_and_succeeds(tmp_path, payload):
    done = capture(tmp_path, "--from-hook", stdin=json.dumps(payload))
    assert done.returncode == 0 and b"nothing to capture" in done.stderr
    assert records(tmp_path) == []


@pytest.mark.parametrize("args, stdin, reason", [
    ((), "not json", b"not valid JSON"),
    ((), "[1, 2]", b"got a JSON list"),
    ((), '{"role": "user"}', b'non-empty string "text"'),
    ((), '{"text": "   "}', b'non-empty string "text"'),
    ((), "", b"empty input"),
    ((), '{"text": "' + "x" * 300 + '"}', b"over the 200-byte limit"),
    (("--from-hook",), "{", b"not valid JSON"),
    (("--from-hook", "--text", "x"), "{}", b"drop --text"),
    (("--text", "x", "--tier", ""), None, b"--tier must not be empty"),
])
def test_invalid_input_exits_nonzero_with_one_line_and_writes_nothing(tmp_path, args, stdin, reason):
    done = capture(tmp_path, *args, stdin=stdin, env={"SESSIONLAKE_CAPTURE_MAX_RECORD_BYTES": "200"})
    assert done.returncode == (1 if "--from-hook" in args else 2)  # 2 would block a hook's prompt
    assert reason in done.stderr and done.stderr.count(b"\n") == 1 and done.stdout == b""
    assert records(tmp_path) == []


def test_unwritable_home_is_a_clear_error(tmp_path):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    done = capture(blocker, "--text", "x")
    assert done.returncode == 2 and done.stderr.startswith(b"sessionlake capture: could not append")
    assert done.stderr.count(b"\n") == 1


def test_capture_does_not_import_dagster_or_lancedb(tmp_path):
    code = ("import sys\nfrom pipelines.cli.main import main\n"
            "assert main(['capture', '--text', 'hot path']) == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dagster', 'lancedb', 'lance', 'duckdb', 'pyarrow', 'pandas'))\n"
            "print(heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60,
                          env={**os.environ, "SESSIONLAKE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().strip() == "[]"
    assert len(records(tmp_path)) == 1


def test_requeue_overflow(tmp_path):
    queue = CaptureQueue(tmp_path / "capture", max_size=2)
    for i in range(5):
        queue.append({"text": str(i)})
    done = capture(tmp_path, "--requeue-overflow")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"requeued 3 envelope(s); pending now 5\n"
    assert [r["text"] for r in records(tmp_path)] == ["0", "1", "2", "3", "4"]
