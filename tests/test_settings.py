"""One settings loader: every value checked up front, nothing read at import, nothing changed on read;
a bad value is one line and exit 2 in the CLI, and one line when the code location loads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.config.settings import SettingError, Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]

BAD_VALUES = {
    "SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC": "0",
    "SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC": "-1",
    "SESSIONLAKE_SENSOR_INTERVAL_SEC": "soon",
    "SESSIONLAKE_CAPTURE_MAX_SIZE": "0",
    "SESSIONLAKE_COST_MODE": "cheapest",
    "SESSIONLAKE_DAGSTER_STORAGE": "mysql",
    "SESSIONLAKE_POOL_WAIT_SEC": "-5",
    "SESSIONLAKE_OWNERS": "ana@example.com,data-team",
}

IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys
import pipelines, resources
before = os.umask(0o022)
for package in (resources, pipelines):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith(".__main__"):  # a script, not a module
            importlib.import_module(module.name)
print(len(sys.modules), oct(os.umask(0o022)))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONLAKE_") and k != "DAGSTER_HOME"}
    return {**env, "SESSIONLAKE_HOME": str(tmp_path / "home"), "SESSIONLAKE_SESSIONS_DIR": str(tmp_path / "none"),
            "SESSIONLAKE_AGENTS": "claude", **extra}


def test_values_come_from_the_environment_with_the_defaults_otherwise(tmp_path, monkeypatch):
    for name in ("SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC", "SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC",
                 "SESSIONLAKE_SENSOR_INTERVAL_SEC", "SESSIONLAKE_COST_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    defaults = Settings.from_env()
    assert (defaults.lance_optimize_interval_sec, defaults.lance_optimize_retention_sec,
            defaults.sensor_interval_sec, defaults.cost_mode) == (3600.0, 86400.0, 60, "auto")
    monkeypatch.setenv("SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC", "120")
    monkeypatch.setenv("SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC", "7200.5")
    monkeypatch.setenv("SESSIONLAKE_SENSOR_INTERVAL_SEC", "15")
    monkeypatch.setenv("SESSIONLAKE_COST_MODE", "Display")
    named = Settings.from_env()
    assert (named.lance_optimize_interval_sec, named.lance_optimize_retention_sec,
            named.sensor_interval_sec, named.cost_mode) == (120.0, 7200.5, 15, "display")


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_every_bad_value_is_a_setting_error_that_names_it(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(name, BAD_VALUES[name])
    with pytest.raises(SettingError) as raised:
        Settings.from_env()
    message = str(raised.value)
    assert message.startswith(f"{name}={BAD_VALUES[name]!r}") and "\n" not in message


def test_reading_the_settings_creates_nothing_and_keeps_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    previous = os.umask(0o022)
    try:
        Settings.from_env()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)
    assert not (tmp_path / "home").exists()


@pytest.mark.integration  # another process
def test_importing_every_module_reads_no_setting(tmp_path):
    """Every variable bad, every module of resources/ and pipelines/ imported: none reads one, none
    changes the umask."""
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=REPO, env=_env(tmp_path, **BAD_VALUES),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "0o22"
    assert not (tmp_path / "home").exists()


@pytest.mark.integration  # another process
@pytest.mark.parametrize("name", ["SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC", "SESSIONLAKE_COST_MODE"])
def test_a_bad_value_is_one_line_and_exit_2_in_the_cli(name, tmp_path):
    for command in (["usage", "daily"], ["maintain"]):
        result = subprocess.run([sys.executable, "-m", "pipelines.cli.main", *command], cwd=REPO,
                                env=_env(tmp_path, **{name: BAD_VALUES[name]}), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sessionlake {command[0]}"), result.stderr
        assert f": {name}={BAD_VALUES[name]!r}" in lines[0], result.stderr
    assert not (tmp_path / "home").exists(), "a command refused at its settings wrote nothing"


@pytest.mark.integration  # another process
def test_capture_checks_its_settings_inside_its_own_error_handling(tmp_path):
    """capture makes the home private itself (a hook must see its own exit status, never main's)."""
    result = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "capture", "--text", "a note"], cwd=REPO,
                            env=_env(tmp_path, SESSIONLAKE_CAPTURE_MAX_SIZE="0"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sessionlake capture: could not append: SESSIONLAKE_CAPTURE_MAX_SIZE='0' must be > 0"]


@pytest.mark.integration  # another process
def test_a_home_that_cannot_be_made_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "home").write_text("a file where the home should be")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "usage", "daily"], cwd=REPO,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"sessionlake usage: SESSIONLAKE_HOME={tmp_path / 'home'}") or \
        line.startswith(f"sessionlake usage: SESSIONLAKE_HOME='{tmp_path / 'home'}'"), line


@pytest.mark.integration  # another process
def test_a_bad_value_fails_loading_the_code_location_with_its_one_line(tmp_path):
    """What Dagster does with the module ``workspace.yaml`` names: a bad value is the error it shows,
    on one line naming the variable; with good values the same load succeeds."""
    env = _env(tmp_path, DAGSTER_HOME=str(tmp_path / "dagster"), SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC="0")
    (tmp_path / "dagster").mkdir()
    argv = [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "pipelines.definitions"]
    bad = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    output = bad.stdout + bad.stderr
    assert "SettingError: sessionlake code location: SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC='0' must be > 0\n" \
        in output, output
    env["SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC"] = "1200"
    good = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr


@pytest.mark.integration  # another process
def test_the_sensor_intervals_are_the_settings_of_the_loaded_location(tmp_path):
    script = ("from pipelines.definitions import defs\nrepo = defs.get_repository_def()\n"
              "print(repo.get_sensor_def('session_files_sensor').minimum_interval_seconds,"
              " repo.get_sensor_def('lance_health_sensor').minimum_interval_seconds)")
    env = _env(tmp_path, SESSIONLAKE_SENSOR_INTERVAL_SEC="15", SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC="1200")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["15", "100"]


@pytest.mark.integration  # another process
def test_every_asset_of_the_loaded_location_has_the_owners_set(tmp_path):
    script = ("from pipelines.definitions import defs\ngraph = defs.resolve_asset_graph()\n"
              "print(sorted({','.join(graph.get(k).owners) for k in graph.get_all_asset_keys()}))")
    env = _env(tmp_path, SESSIONLAKE_OWNERS="ana@example.com, team:data")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['ana@example.com,team:data']"
