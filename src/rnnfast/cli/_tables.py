"""Text tables: the one formatter of aligned columns, for ``rnnfast diagnose`` and (through
:func:`rnnfast.benchmark.format_table`) ``rnnfast bench``."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def format_rows(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    """Rows of cells as aligned text columns, a rule under the first row (the header);
    the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
