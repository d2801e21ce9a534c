"""The Dagster instance the CLI uses: ``DAGSTER_HOME``, or ``<SESSIONLAKE_HOME>/dagster`` when unset.

The instance settings sessionlake needs (pools, threaded sensors, the pooled event log) ship as
``pipelines/dagster.yaml`` and are copied into a home that has no ``dagster.yaml`` of its own; an
existing one is never touched. The copy names its own folder as the event log's ``base_dir``, so an
instance opened by path (``DagsterInstance.from_config(home)``) never reads another home's logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from resources.settings import Settings

INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")


def prepare_dagster_home(settings: Settings) -> Path:
    """Make sure ``DAGSTER_HOME`` is set and holds a dagster.yaml; returns the folder."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    install_instance_yaml(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def install_instance_yaml(home: Path) -> None:
    """Write the shipped dagster.yaml into ``home`` (an existing folder) unless it has one."""
    target = home / "dagster.yaml"
    if target.exists():
        return
    text = INSTANCE_YAML.read_text().replace("{env: DAGSTER_HOME}", json.dumps(str(home.resolve())))
    target.write_text(text)
