"""Shared fixtures: the sample sessions (copied so tests may change them) and a tmp data home."""

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from pipelines.cli.demo import SAMPLES as DEMO_SAMPLES
from resources.config.private_home import make_private
from resources.config.settings import Settings
from resources.state.store import StateStore

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = DEMO_SAMPLES
"""Four real Claude Code sessions: the ones `sessionlake demo` ingests (pipelines/cli/samples/README.md)."""
SAMPLE_PROJECT = "-Users-chip-dev-ai-music"
AGENT_SAMPLES = FIXTURES / "agents"
"""Codex, Gemini CLI, OpenCode and Qwen Code samples, laid out under a $HOME as those agents keep them."""

pytest_plugins = ["tests.s3_support"]  # s3_server, s3_location: a loopback S3 API server


KINDS = ("unit", "integration", "e2e")
ONE_WORKER_MODULES = ("tests/test_mcp.py", "tests/test_postgres_instance.py", "tests/test_recall_hits.py")
"""The modules whose tests share a fixture made once per module (a Postgres server, an ingested home): under
`make test` each runs on one worker, so that fixture is made once. A module with such a fixture belongs here."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is marked unit, integration or e2e (pyproject.toml says what each means), and every module
    with a module-scoped fixture is one of `ONE_WORKER_MODULES`."""
    unmarked = sorted({item.path.name for item in items if not any(item.get_closest_marker(k) for k in KINDS)})
    if unmarked:
        raise pytest.UsageError(f"mark these test files with pytestmark = pytest.mark.<{'|'.join(KINDS)}>: "
                                f"{', '.join(unmarked)}")
    shared = sorted({item.nodeid.split("::")[0] for item in items
                     for defs in item._fixtureinfo.name2fixturedefs.values() if defs[-1].scope in ("module", "class")}
                    - set(ONE_WORKER_MODULES))
    if shared:
        raise pytest.UsageError(f"add these modules to ONE_WORKER_MODULES in tests/conftest.py: {', '.join(shared)}")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (`make test`): the tests are handed to the workers one at a time as each one
    finishes, so the workers end together; the tests of a module in `ONE_WORKER_MODULES` go to one
    worker together, and first. (xdist's own ``xdist_group`` marks do not group under pytest 9.2:
    pytest-xdist issue 1386; they still work here if they ever do.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return module if module in ONE_WORKER_MODULES else super()._split_scope(nodeid)

    return ModuleGroups(config, log)


@pytest.fixture(autouse=True)
def _only_the_agents_a_test_names(monkeypatch: pytest.MonkeyPatch):
    """Claude Code only, unless a test names other agents' folders: a developer's own ~/.codex or
    ~/.gemini must never leak into a test (or into the CLI processes it starts)."""
    monkeypatch.setenv("SESSIONLAKE_AGENTS", "claude")


def writable_copy(src: Path, dest: Path) -> Path:
    """``src`` copied to ``dest`` with every folder and file writable by the test (the fixtures are read-only)."""
    shutil.copytree(src, dest)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@pytest.fixture
def samples_root(tmp_path: Path) -> Path:
    """A writable copy of the four sample sessions, laid out as ~/.claude/projects."""
    return writable_copy(SAMPLES, tmp_path / "projects")


@pytest.fixture
def agent_home(tmp_path: Path) -> Path:
    """A writable $HOME holding the other agents' samples (`AGENT_SAMPLES`) where those agents keep them."""
    return writable_copy(AGENT_SAMPLES, tmp_path / "user")


def agent_settings(data_home: Path, home: Path) -> Settings:
    """Settings for data home ``data_home`` reading every agent's default folder under ``home``."""
    return Settings(home=data_home, sessions_dir=home / ".claude" / "projects", codex_home=home / ".codex",
                    gemini_dir=home / ".gemini", opencode_dir=home / ".local" / "share" / "opencode",
                    qwen_dir=home / ".qwen")


@pytest.fixture
def settings(tmp_path: Path, samples_root: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for a tmp data home over the sample sessions, also exported to the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("SESSIONLAKE_HOME", str(home))
    monkeypatch.setenv("SESSIONLAKE_SESSIONS_DIR", str(samples_root))
    settings = Settings.from_env()
    make_private(settings)  # what every entry point does first
    return settings


@pytest.fixture
def state(settings: Settings) -> StateStore:
    return StateStore.from_settings(settings)


@pytest.fixture(autouse=True)
def _reset_dagster_defs_state_storage():
    """Entering one Dagster instance twice (a fixture's ``instance_for_test()`` and then
    ``execute_in_process(instance=...)``) leaves its defs-state storage current after both exit, and
    a later test that loads Definitions would open that deleted instance. Reset it around each test."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


# Property tests (hypothesis): reproducible by default. The "ci" profile derandomizes (the same examples
# on every run, so a failure in CI fails the same way on a laptop) and keeps no example database; set
# SESSIONLAKE_HYPOTHESIS_PROFILE=explore for a random search that remembers failures in .hypothesis/.
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.register_profile(
    "explore", derandomize=False, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile(os.environ.get("SESSIONLAKE_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["folder", "s3"])
def sync_uri(request, tmp_path: Path) -> str:
    """A sync location shared by the machines of a test: a folder, then a bucket on the moto S3 server."""
    if request.param == "folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        return str(shared)
    location = request.getfixturevalue("s3_location")
    return f"s3://{location.bucket}/{location.prefix}"
