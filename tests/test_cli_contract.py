"""The one CLI contract, through the console script: exit statuses (pipelines/cli/exits.py), one project
resolver behind every ``--project``, ``--session`` and the old spellings, ``--version``, a description for
every command, and bad usage reported under the (sub)command's own usage line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from pipelines.cli.main import build_parser
from resources.archive.packs import PackStore
from resources.ingest.processors.archive import ArchiveProcessor
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.memory.lance import LanceStore
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration

TYPO = "-Users-chip-dev-ai-musik"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def ingested(settings, state, tmp_path):
    """The samples in the warehouse, the memory and the archive (the processors called directly)."""
    processors = [UsageProcessor(), MemoryProcessor(LanceStore.from_settings(settings)),
                  ArchiveProcessor(PackStore.from_settings(settings))]
    stats = run_processors(processors, settings.sessions_dir, state)
    assert not any(s["errors"] for s in stats.values()), stats
    return {"DAGSTER_HOME": str(tmp_path / "dagster")}


def test_version():
    done = _cli("--version")
    assert (done.returncode, done.stdout) == (0, f"sessionlake {version('sessionlake')}\n")


def _parsers(parser, path=("sessionlake",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_and_subcommand_describes_itself():
    parsers = dict(_parsers(build_parser()))
    assert len(parsers) > 15
    assert [" ".join(path) for path, p in parsers.items() if not p.description] == []
    listed = _cli("--help")
    assert listed.returncode == 0 and "--version" in listed.stdout and "restore" in listed.stdout


@pytest.mark.parametrize("argv", [
    ["usage", "daily", "--bogus"],
    ["recall", "x", "--bogus"],
    ["archive", "verify", "--bogus"],
    ["restore", "--bogus", "--to", "x", "--project", "p"],
])
def test_bad_usage_is_reported_under_the_commands_own_usage_line(argv, settings):
    done = _cli(*argv)
    command = " ".join(a for a in argv if not a.startswith("-") and a not in ("x", "p", "daily"))
    assert done.returncode == 2
    first, *_, last = done.stderr.strip().splitlines()
    assert first.startswith(f"usage: sessionlake {command} ")
    assert last == f"sessionlake {command}: error: unrecognized arguments: --bogus"


def test_every_command_resolves_project_names_alike(ingested, tmp_path):
    """Leading dash optional, -p like --project, repeatable; an unknown name is exit 1 with the closest."""
    checks = {
        "usage": (["usage", "project", "--json"], lambda out: [p["project"] for p in json.loads(out)["projects"]]),
        "recall": (["recall", "conda", "--json"], lambda out: {hit["project"] for hit in json.loads(out)}),
        "archive": (["archive", "verify", "--json"], lambda out: json.loads(out)["ok"]),
    }
    for command, (argv, read) in checks.items():
        for spelling in (["--project", SAMPLE_PROJECT], ["-p", SAMPLE_PROJECT], ["-p", SAMPLE_PROJECT.lstrip("-")],
                         ["--project", SAMPLE_PROJECT, "-p", SAMPLE_PROJECT.lstrip("-")]):
            done = _cli(*argv, *spelling, env=ingested)
            assert done.returncode == 0, (command, spelling, done.stderr)
            assert read(done.stdout) in ([SAMPLE_PROJECT], {SAMPLE_PROJECT}, True), (command, spelling)
        typo = _cli(*argv, "--project", TYPO, env=ingested)
        assert typo.returncode == 1 and typo.stdout == "", (command, typo.stderr)
        assert typo.stderr.count("\n") == 1 and f"for project '{TYPO}'; closest: {SAMPLE_PROJECT}" in typo.stderr
        assert typo.stderr.startswith(f"sessionlake {' '.join(argv[:2] if command == 'archive' else argv[:1])}: ")

    restored = _cli("restore", "-p", SAMPLE_PROJECT.lstrip("-"), "--to", str(tmp_path / "out"), env=ingested)
    assert restored.returncode == 0, restored.stderr
    assert len(list((tmp_path / "out" / SAMPLE_PROJECT).glob("*.jsonl"))) == 4
    for argv in (["restore", "--project", TYPO, "--to", str(tmp_path / "no")], ["ingest", "--project", TYPO],
                 ["archive", "ls", TYPO]):
        done = _cli(*argv, env=ingested)
        assert done.returncode == 1 and f"closest: {SAMPLE_PROJECT}" in done.stderr, (argv, done.stderr)
    assert not (tmp_path / "no").exists()


def test_session_and_its_old_spellings(ingested, settings, tmp_path):
    session = "fed8ce56-bc79-401f-a83e-af084253362f"
    reports = [_cli("usage", "session", flag, session, "--json", env=ingested) for flag in ("--session", "--id", "-i")]
    assert [r.returncode for r in reports] == [0, 0, 0], reports[0].stderr
    assert len({r.stdout for r in reports}) == 1 and json.loads(reports[0].stdout)["totalTokens"] > 0
    unknown = _cli("usage", "session", "--session", "no-such-session", "--json", env=ingested)
    assert (unknown.returncode, unknown.stdout.strip()) == (1, "null")  # nothing found

    restored = _cli("restore", "-p", SAMPLE_PROJECT, "--session", session, "--to", str(tmp_path / "one"), env=ingested)
    assert restored.returncode == 0, restored.stderr
    assert [p.name for p in (tmp_path / "one").rglob("*.jsonl")] == [f"{session}.jsonl"]
    missing = _cli("restore", "-p", SAMPLE_PROJECT, "--session", "nope", "--to", str(tmp_path / "none"), env=ingested)
    assert missing.returncode == 1 and "no archived session 'nope'" in missing.stderr

    help_text = _cli("recall", "--help").stdout + _cli("usage", "--help").stdout + _cli("capture", "--help").stdout
    assert "--session-id" not in help_text and "--id" not in help_text  # accepted, not listed
    caller = _cli("recall", "conda", "-k", "1", "--session-id", "agent-7", "--json", env=ingested)
    assert caller.returncode == 0, caller.stderr
    [hit] = json.loads(caller.stdout)
    provenance = LanceStore.from_settings(settings).get(hit["id"])["provenance"]
    assert [entry["session_id"] for entry in provenance] == ["agent-7"]
