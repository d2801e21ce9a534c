"""How many examples a property test runs: ``SESSIONLAKE_PROPERTY_SCALE=10`` runs ten times the usual number."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    """``n`` examples times the scale in ``SESSIONLAKE_PROPERTY_SCALE`` (1 by default), at least one."""
    return max(1, int(n * float(os.environ.get("SESSIONLAKE_PROPERTY_SCALE", "1"))))
