"""The one plain-text table the commands print (``usage``, ``archive ls``, ``prices``)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence], totals: Sequence | None = None) -> str:
    """``header``, a rule, ``rows`` and, when given, a rule and ``totals``; columns two spaces apart.

    Integers print with thousands separators, floats with two decimals, None as nothing. A column whose
    cells are all numbers is right-aligned (its header too), any other column left-aligned.
    """
    body = [*rows, *([totals] if totals is not None else [])]
    columns = [[row[i] for row in body] for i in range(len(header))]
    numeric = [any(map(_is_number, col)) and all(_is_number(v) or v in (None, "") for v in col) for col in columns]
    cells = [[_cell(v) for v in row] for row in [header, *body]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric, strict=True))
             .rstrip() for row in cells]
    rule = "  ".join("-" * w for w in widths)
    lines.insert(1, rule)
    if totals is not None:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
