"""What a recall hit means, through the command line: scopes, query syntax, the JSON shape, the token budget,
context around a hit, and ``sessionlake show`` from the memory and, when the memory lost a session, the archive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.cli.mcp import caller_of
from resources.memory.fts_query import QuerySyntaxError, parse_query
from resources.memory.hits import ALL_FIELDS, MINIMAL_FIELDS, fit_budget, parse_since
from resources.memory.lance import LanceStore
from resources.memory.schema import RECORDS, sql_str
from tests.conftest import SAMPLE_PROJECT, SAMPLES, writable_copy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PUSH_PROMPT = "ed356c9b-5106-4a60-b082-60e90997ce2b"
PUSH_ANSWER = "71df1268-cc05-4fd5-aa54-3c9f02765515"
PUSH_SESSION = "fed8ce56-bc79-401f-a83e-af084253362f"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hits")
    writable_copy(SAMPLES, root / "projects")
    env = {**os.environ, "SESSIONLAKE_HOME": str(root / "home"), "SESSIONLAKE_SESSIONS_DIR": str(root / "projects"),
           "DAGSTER_HOME": str(root / "dagster"), "SESSIONLAKE_AGENTS": "claude"}
    assert _cli("ingest", env=env).returncode == 0
    return env


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def _hits(env, *args) -> list[dict]:
    done = _cli("recall", *args, "--json", env=env)
    hits = json.loads(done.stdout)
    assert done.returncode == (0 if hits else 1), done.stderr  # nothing found is exit 1, with [] on stdout
    return hits


def test_json_is_the_documented_shape_and_minimal_keeps_its_fields(env):
    hits = _hits(env, "push to github", "-k", "3")
    assert len(hits) == 3 and all(tuple(h) == ALL_FIELDS for h in hits)
    first = hits[0]
    assert (first["id"], first["agent"], first["session"], first["role"]) == (PUSH_PROMPT, "claude", PUSH_SESSION,
                                                                              "user")
    assert first["time"] == "2025-06-10T12:36:23.208000Z" and first["project"] == SAMPLE_PROJECT
    minimal = _hits(env, "push to github", "-k", "3", "--fields", "minimal")
    assert [tuple(h) for h in minimal] == [MINIMAL_FIELDS] * 3
    assert [h["handle"] for h in minimal] == [h["handle"] for h in hits]


def test_scopes_narrow_by_agent_session_role_and_relative_time(env):
    assert {h["agent"] for h in _hits(env, "github", "--agent", "claude")} == {"claude"}
    assert _hits(env, "github", "--agent", "codex") == []
    assert {h["role"] for h in _hits(env, "github", "--role", "assistant")} == {"assistant"}
    by_session = _hits(env, "github", "--session", PUSH_SESSION[:8])
    assert by_session and {h["session"] for h in by_session} == {PUSH_SESSION}
    assert _hits(env, "github", "--since", "7d") == []  # the samples are from June 2025
    assert _hits(env, "github", "--since", "2025-06-10")
    bad = _cli("recall", "github", "--agent", "cursor", env=env)
    assert bad.returncode == 2 and "expected one of claude" in bad.stderr and bad.stdout == ""


def test_phrase_prefix_and_boolean_queries_and_a_clear_error_for_the_rest(env):
    phrase = _hits(env, '"push to github"', "-k", "20")
    texts = LanceStore(Path(env["SESSIONLAKE_HOME"]) / "lance").get_many([h["id"] for h in phrase])
    # the words in this order, each as the index stems it ("pushed to GitHub" is the phrase too)
    assert phrase and all(re.search(r"\bpush\w*\W+to\W+github", texts[h["id"]]["text"].lower()) for h in phrase)
    without = _hits(env, "github -push", "-k", "20")
    assert without and all("push" not in h["snippet"].lower() for h in without)
    both = _hits(env, "github AND commit", "-k", "20")
    assert both and len(both) < len(_hits(env, "github OR commit", "-k", "20"))
    assert _hits(env, "githu*", "-k", "5")  # github: the prefix and two letters
    for query, says in (('"push to', "unclosed quote"), ("github AND", "no term after it"),
                        ("NOT github", "only excludes"), ("(a OR b)", "parentheses")):
        done = _cli("recall", query, env=env)
        assert done.returncode == 2 and says in done.stderr and done.stdout == "", query


def test_context_and_the_token_budget_cut_text_not_hits(env):
    hits = _hits(env, "push to github", "-k", "3", "--context", "1")
    first = hits[0]
    assert first["context"]["before"] == [] and first["context"]["after"][0]["id"] == PUSH_ANSWER
    full = _hits(env, "music", "-k", "8", "--context", "2")
    budget = int(len(json.dumps(full, separators=(",", ":"), ensure_ascii=False)) * 0.8) // 4
    done = _cli("recall", "music", "-k", "8", "--context", "2", "--max-tokens", str(budget), "--json", env=env)
    cut = json.loads(done.stdout)
    assert [h["id"] for h in cut] == [h["id"] for h in full]
    assert len(done.stdout.strip()) <= budget * 4  # what is printed is what fits
    assert all(len(c["snippet"]) <= len(f["snippet"]) for c, f in zip(cut, full, strict=True))


def test_show_a_session_around_a_hit_and_from_the_archive_once_the_memory_lost_it(env):
    handle = _hits(env, "push to github", "-k", "1")[0]["handle"]
    shown = _cli("show", PUSH_SESSION[:8], "--around", handle, "-C", "1", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["source"] == "memory" and view["around"] == PUSH_PROMPT
    assert [m["id"] for m in view["messages"]] == [PUSH_PROMPT, PUSH_ANSWER]
    text = _cli("show", PUSH_SESSION, env=env)
    assert text.returncode == 0 and "> " not in text.stdout and "push to github" in text.stdout
    whole = len(json.loads(_cli("show", PUSH_SESSION, "--json", env=env).stdout)["messages"])

    store = LanceStore(Path(env["SESSIONLAKE_HOME"]) / "lance")
    store.open_table(RECORDS).delete(f"session_id = {sql_str(PUSH_SESSION)}")  # a rebuild without this file
    archived = json.loads(_cli("show", PUSH_SESSION, "--around", handle, "-C", "1", "--json", env=env).stdout)
    assert archived["source"] == "archive" and [m["id"] for m in archived["messages"]] == [PUSH_PROMPT, PUSH_ANSWER]
    assert len(json.loads(_cli("show", PUSH_SESSION, "--json", env=env).stdout)["messages"]) == whole
    missing = _cli("show", "0000dead", env=env)
    assert missing.returncode == 1 and "no session '0000dead'" in missing.stderr


def test_since_budget_query_and_caller_rules():
    now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7) and parse_since("3h", now) == now - timedelta(hours=3)
    assert parse_since("2025-06-10") == datetime(2025, 6, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="30m, 3h, 7d"):
        parse_since("last week")
    assert parse_query("push to github").plain and not parse_query('"push to github"').plain
    with pytest.raises(QuerySyntaxError):
        parse_query("NOT")
    hits = [{"rank": i, "snippet": "x" * 500} for i in range(10)]
    assert [h["rank"] for h in fit_budget(hits, 100)] == list(range(10))  # too small to meet: cut, never dropped
    assert caller_of({"sessionID": "oc"}, {"CLAUDE_CODE_SESSION_ID": "cc"}, "client") == ("oc", True)
    assert caller_of({"threadId": "cx"}, {}, "client") == ("cx", True)
    assert caller_of({}, {"CLAUDE_CODE_SESSION_ID": "cc"}, "client") == ("cc", True)
    assert caller_of({"x-codex-turn-metadata": {"session_id": "t"}}, {}, None) == ("t", True)
    assert caller_of(None, {}, "gemini-cli") == ("gemini-cli", False) and caller_of(None, {}, None) == ("mcp", False)


def test_hybrid_ranking_fuses_vector_and_full_text_by_reciprocal_rank_for_any_query(tmp_path, samples_root):
    from lancedb.rerankers import RRFReranker

    from resources.memory.hits import scope_filter
    from resources.memory.recall import recall
    from tests.test_recall import _ingested

    store = _ingested(tmp_path, samples_root, embedder="sessionlake-test-hashing")  # a deterministic embedder
    best = 2 / (RRFReranker().K + 1)  # first in both lists: the most reciprocal-rank fusion can give
    hits = recall(store, '"push to github"', "h", k=5)
    assert hits[0]["id"] == PUSH_PROMPT and 0 < hits[0]["score"] <= best
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    answers = recall(store, "github AND push", "h", k=5, where=scope_filter(role="assistant"))  # scopes bind both
    assert answers and {h["role"] for h in answers} == {"assistant"}
