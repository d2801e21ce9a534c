"""End to end through the console script: ingest on a Dagster instance, then reports."""

import json
import os
import subprocess
import sys

import dagster as dg

from tests.conftest import SAMPLE_PROJECT


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_ingest_then_usage_json_then_nothing_new(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    first = _cli("ingest", "--only", "usage", "--json", env=env)
    assert first.returncode == 0, first.stderr
    stats = json.loads(first.stdout)
    assert stats["success"] and stats["projects"] == [SAMPLE_PROJECT]
    assert stats["assets"]["usage_messages"]["processed"] == 4

    report = _cli("usage", "daily", "--json", env=env)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    assert (totals["inputTokens"], totals["outputTokens"], totals["cacheCreationTokens"],
            totals["cacheReadTokens"]) == (293, 19_313, 206_624, 4_302_385)

    second = json.loads(_cli("ingest", "--only", "usage", "--json", env=env).stdout)
    assert (second["run_id"], second["projects"], second["up_to_date"]) == (None, [], 1)  # nothing to do: no run
    forced = json.loads(_cli("ingest", "--only", "usage", "--all", "--json", env=env).stdout)
    assert forced["assets"]["usage_messages"]["processed"] == 0 and forced["assets"]["usage_messages"]["skipped"] == 4

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["ingest_sessions", "ingest_sessions"]
        assert instance.get_dynamic_partitions("projects") == [SAMPLE_PROJECT]

    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    grown = json.loads(_cli("ingest", "--only", "usage", "--json", env=env).stdout)
    assert grown["projects"] == [SAMPLE_PROJECT] and grown["assets"]["usage_messages"]["processed"] == 1


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


def test_usage_for_an_unknown_project_exits_1_naming_the_closest(settings, state):
    from pipelines.processors.runner import run_processors
    from pipelines.processors.usage import UsageProcessor

    run_processors([UsageProcessor()], settings.sessions_dir, state)
    env = dict(os.environ)
    typo = _cli("usage", "--project", "-Users-chip-dev-ai-musik", env=env)
    assert typo.returncode == 1 and typo.stdout == ""
    assert "no usage for project '-Users-chip-dev-ai-musik'" in typo.stderr and SAMPLE_PROJECT in typo.stderr
    without_dash = _cli("usage", "project", "--json", "--project", SAMPLE_PROJECT.lstrip("-"), env=env)
    assert without_dash.returncode == 0, without_dash.stderr
    assert [p["project"] for p in json.loads(without_dash.stdout)["projects"]] == [SAMPLE_PROJECT]
