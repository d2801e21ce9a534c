"""End to end through the console script: ingest on a Dagster instance, then reports."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_ingest_then_usage_json_then_nothing_new(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    first = _cli("ingest", "--only", "usage", "--json", env=env)
    assert first.returncode == 0, first.stderr
    stats = json.loads(first.stdout)
    assert stats["success"] and stats["projects"] == [SAMPLE_PROJECT]
    assert stats["assets"]["usage_messages"]["files_processed"] == 4 and stats["errors"] == 0

    report = _cli("usage", "daily", "--json", env=env)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    assert (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"],
            totals["cacheReadTokens"]) == (293, 19_313, 206_624, 4_302_385)

    second_run = _cli("ingest", "--only", "usage", "--json", env=env)
    assert second_run.returncode == 0, second_run.stderr
    second = json.loads(second_run.stdout)
    assert (second["run_id"], second["projects"], second["up_to_date"]) == (None, [], 1)  # nothing to do: no run
    forced = json.loads(_cli("ingest", "--only", "usage", "--all", "--json", env=env).stdout)
    usage = forced["assets"]["usage_messages"]
    assert (usage["files_processed"], usage["files_unchanged"]) == (0, 4)

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["ingest_sessions", "ingest_sessions"]
        assert instance.get_dynamic_partitions("projects") == [SAMPLE_PROJECT]

    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    grown = json.loads(_cli("ingest", "--only", "usage", "--json", env=env).stdout)
    assert grown["projects"] == [SAMPLE_PROJECT] and grown["assets"]["usage_messages"]["files_processed"] == 1


def test_usage_rejects_a_bad_time_zone_in_one_line(settings):
    result = _cli("usage", "--timezone", "Mars/Olympus", env=dict(os.environ))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Mars/Olympus" in result.stderr


def test_weekly_text_report_prints_totals(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", "--only", "usage", env=env).returncode == 0
    out = _cli("usage", "weekly", env=env).stdout
    assert "2025-06-02" in out and "2025-06-09" in out
    assert out.strip().splitlines()[-1].split()[:3] == ["total", "293", "19,313"]


def test_project_names_starting_with_a_dash_are_values_not_options(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", "--only", "usage", "--project", SAMPLE_PROJECT, env=env).returncode == 0
    result = _cli("usage", "project", "--json", "--project", SAMPLE_PROJECT, env=env)
    assert result.returncode == 0, result.stderr
    assert [p["project"] for p in json.loads(result.stdout)["projects"]] == [SAMPLE_PROJECT]


def test_ingest_without_sessions_is_an_error_that_says_where_it_looked(tmp_path):
    env = {**os.environ, "SESSIONLAKE_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "SESSIONLAKE_SESSIONS_DIR": str(tmp_path / "no-such-dir")}
    named = _cli("ingest", env=env)
    assert named.returncode == 2 and "no-such-dir does not exist" in named.stderr
    default = _cli("ingest", env={**{k: v for k, v in env.items() if k != "SESSIONLAKE_SESSIONS_DIR"},
                                  "HOME": str(tmp_path / "empty-home")})
    assert default.returncode == 2
    assert "no session data found" in default.stderr and str(tmp_path / "empty-home" / ".claude") in default.stderr
    assert "success" not in named.stdout + default.stdout


FAILING_INGEST = """
import sys
import resources.ingest.plan as plan
real = plan.compute_file_hash
def unreadable(path, size=None):  # an I/O error on one file, as a full or failing disk gives
    if "ba79134d" in str(path):
        raise OSError(5, "Input/output error", str(path))
    return real(path, size)
plan.compute_file_hash = unreadable
from pipelines.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_ingest_with_a_failing_file_exits_1_and_lists_it(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    result = subprocess.run([sys.executable, "-c", FAILING_INGEST, "ingest"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "(success)" not in result.stdout and "file error(s)" in result.stdout
    assert "ba79134d" in result.stderr and "Input/output error" in result.stderr
    assert str(settings.retry_dir) in result.stderr
    again = _cli("ingest", "--json", env=env)  # the disk recovered: the failed file is retried, nothing else
    assert again.returncode == 0, again.stderr
    stats = json.loads(again.stdout)
    assert stats["assets"]["usage_messages"]["files_processed"] == 1 and stats["errors"] == 0


def test_usage_for_an_unknown_project_exits_1_naming_the_closest(settings, state):
    from resources.ingest.processors.usage import UsageProcessor
    from resources.ingest.runner import run_processors

    run_processors([UsageProcessor()], settings.sessions_dir, state)
    env = dict(os.environ)
    typo = _cli("usage", "--project", "-Users-chip-dev-ai-musik", env=env)
    assert typo.returncode == 1 and typo.stdout == ""
    assert "no usage for project '-Users-chip-dev-ai-musik'" in typo.stderr and SAMPLE_PROJECT in typo.stderr
    without_dash = _cli("usage", "project", "--json", "--project", SAMPLE_PROJECT.lstrip("-"), env=env)
    assert without_dash.returncode == 0, without_dash.stderr
    assert [p["project"] for p in json.loads(without_dash.stdout)["projects"]] == [SAMPLE_PROJECT]
