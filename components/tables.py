"""Column widths for the studio's tables. Left to Gradio, a table sizes its columns from their longest cell: one
long name or path took the room and the other columns shrank until their headers stood one letter per line (the
Aliases header was 142 px tall). Each table names a width per column instead; text wraps inside it and a table
wider than the page scrolls sideways."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def column_widths(headers: Iterable[str], widths: Mapping[str, int], default: int = 110) -> list[str | int]:
    """Pixel widths for ``headers`` in order, as ``gr.Dataframe(column_widths=...)`` takes them: ``widths`` by
    header, ``default`` for a header it does not name (a column added later, such as a grouping column)."""
    return [f"{widths.get(header, default)}px" for header in headers]
