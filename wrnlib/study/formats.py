"""How the study writes numbers as text: the core's percentage and duration, a missing value as "–", and its one
markdown table writer.

The core's :func:`wrnlib.progress.pct` and :func:`wrnlib.progress.duration` do the formatting; the study's tables
show a missing value as an en dash, its command-line listing (``python -m wrnlib runs``) as "-".
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .. import progress

MISSING = "–"


def pct(value: Any, missing: str = MISSING, digits: int = 2) -> str:
    """A fraction as a percentage, "91.20%"."""
    return progress.pct(value, missing=missing, digits=digits)


def points(value: Any) -> str:
    """A fraction in percentage points without the % sign (an ECE of 0.0789 is 7.89 points)."""
    return pct(value).rstrip("%")


def duration(seconds: Any, missing: str = MISSING) -> str:
    """Seconds for people: "42 s", "12.5 min", "3.2 h"."""
    return progress.duration(seconds, missing=missing)


def number(value: Any, fmt: str) -> str:
    """``value`` in the format ``fmt``; a dash for no number, NaN (not recorded) or infinity (no measurement)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return MISSING
    return format(v, fmt) if math.isfinite(v) else MISSING


def text(value: Any) -> str:
    """A text field of a run (its device, ...); a dash where the run did not record it (None, or NaN in a table)."""
    return value if isinstance(value, str) and value else MISSING


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of text cells, without a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
