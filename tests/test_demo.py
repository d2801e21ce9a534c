"""``sessionlake demo`` from the files a non-editable install ships, not from this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def _installed_files(tmp_path: Path) -> Path:
    """The packages and package data `pip install .` puts in site-packages (setuptools' build_py, which
    a wheel build runs), laid out in a folder of their own."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pipelines", "resources"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    lib = tmp_path / "lib"
    built = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                            "--build-lib", str(lib)], cwd=src, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return lib


def test_demo_runs_from_an_installed_copy(tmp_path):
    lib = _installed_files(tmp_path)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(lib)}  # ahead of the editable install's finder
    where = subprocess.run([sys.executable, "-c", "import pipelines.cli.demo as d; print(d.SAMPLES)"], env=env,
                           cwd=run_dir, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(lib)), where.stderr

    demo = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "demo", "--home", str(tmp_path / "home")],
                          env=env, cwd=run_dir, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert "$ sessionlake usage daily" in demo.stdout and "19,313" in demo.stdout  # the samples' output tokens
    assert "The second ingest found nothing new" in demo.stdout
    assert len(list((tmp_path / "home" / "sessions").rglob("*.jsonl"))) == 4
