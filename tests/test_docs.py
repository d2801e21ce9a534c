"""The manual's generated pages match the code they describe."""

from pathlib import Path

import pytest

from pipelines.definitions import defs
from pipelines.defs.what_runs_when import render

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_what_runs_when_page_matches_the_definitions():
    page = (DOCS / "what-runs-when.md").read_text()
    assert page == render(defs), (
        "docs/what-runs-when.md is stale: python -m pipelines.defs.what_runs_when > docs/what-runs-when.md")


def test_cli_page_matches_the_parsers():
    from pipelines.cli.reference import render as render_cli

    assert (DOCS / "cli.md").read_text() == render_cli(), (
        "docs/cli.md is stale: python -m pipelines.cli.reference > docs/cli.md")
