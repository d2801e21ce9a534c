"""The README and the manual point at what exists: every command the README lists answers ``--help``, every
relative link resolves, and the README stays a front door."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _listed_commands() -> list[list[str]]:
    """The words of each ``sessionlake ...`` command in the README's command table, up to its first argument."""
    rows = re.findall(r"^\| `sessionlake ([a-z ]+)", README, re.M)
    return [row.split() for row in rows]


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 250
    assert len(_listed_commands()) >= 15


@pytest.mark.parametrize("words", _listed_commands(), ids=" ".join)
def test_every_command_the_readme_lists_exists(words):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *words, "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: sessionlake" in result.stdout


def test_every_relative_link_in_the_readme_and_the_manual_resolves():
    pages = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
