"""The peer most benchmarks compare with: the npm package ccusage, pinned, installed once into a cache
folder outside the repository. Its 20.x launcher needs a native binary package for the platform:
20.0.24 installs here, 20.0.26 did not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CCUSAGE_VERSION = "20.0.24"
CCUSAGE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sessionlake-bench" / (
    f"ccusage-{CCUSAGE_VERSION}")


def ccusage_launcher() -> tuple[str | None, str]:
    """The ccusage launcher (installing the pinned version once), or None and why not."""
    launcher = CCUSAGE_DIR / "node_modules" / ".bin" / "ccusage"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "node or npm is not installed"
    if not launcher.exists():
        CCUSAGE_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["npm", "install", "--prefix", str(CCUSAGE_DIR), "--no-audit", "--no-fund",
                                 f"ccusage@{CCUSAGE_VERSION}"], capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not launcher.exists():
            return None, f"npm install ccusage@{CCUSAGE_VERSION} failed: {result.stderr.strip()[-300:]}"
    return str(launcher), ""
