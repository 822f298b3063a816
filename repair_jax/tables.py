"""The one table writer: Markdown tables for reports (the library formats, callers print)."""

from __future__ import annotations

from typing import Sequence

MISSING = "—"


def cell(value, float_format: str | None = None) -> str:
    """A cell's text: ``None`` and NaN become :data:`MISSING` (explain it in a footnote), floats use
    ``float_format`` (e.g. ``"{:.3f}"``) when given, others ``str``."""
    if value is None or (isinstance(value, float) and value != value):
        return MISSING
    if float_format is not None and isinstance(value, float):
        return float_format.format(value)
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], footnotes: Sequence[str] = (),
                   float_format: str | None = None) -> str:
    """A GitHub Markdown table (no trailing newline); ``footnotes`` follow after a blank line;
    ``float_format`` formats float cells (see :func:`cell`)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} headers: {row!r}")
        lines.append("| " + " | ".join(cell(v, float_format) for v in row) + " |")
    if footnotes:
        lines += [""] + list(footnotes)
    return "\n".join(lines)
