"""The Dagster instance the CLI uses: ``DAGSTER_HOME``, or ``<SESSIONLAKE_HOME>/dagster`` when unset.

The instance settings sessionlake needs (pools, threaded sensors) ship as ``pipelines/dagster.yaml``
and are copied into a home that has no ``dagster.yaml`` of its own; an existing one is never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from resources.settings import Settings

INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")


def prepare_dagster_home(settings: Settings) -> Path:
    """Make sure ``DAGSTER_HOME`` is set and holds a dagster.yaml; returns the folder."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
