"""Machine-readable renderings of report rows (the CLI's ``--format json|csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

__all__ = ["csv_cell", "csv_value", "render_csv", "render_json"]

# A cell a spreadsheet would run as a formula (=, +, -, @, or a tab/CR before one): CSV injection.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell that a spreadsheet shows as text, never runs (OWASP "CSV injection"):
    text starting like a formula gets a leading ``'``, and so does text already starting with one,
    so :func:`csv_value` reverses it exactly. Numbers (``-0.25``, a negative delta) stay as they are.
    ``None`` is an empty cell."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith("'") or (text.startswith(_FORMULA_START) and not _is_number(text)):
        return "'" + text
    return text


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote (its leading ``'`` removed)."""
    return cell[1:] if cell.startswith("'") else cell


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def render_json(report: object) -> str:
    """``report`` as indented JSON; costs are already decimal strings, so nothing becomes a float."""
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def render_csv(rows: Sequence[Mapping[str, Any]], header: Sequence[str] = ()) -> str:
    """Rows as CSV with a header; an absent value (unknown cost, no tenant) is an empty cell, and text
    a spreadsheet would run as a formula is kept as text (:func:`csv_cell`). With
    no rows, the ``header`` line alone (so a script reading the file still finds its columns)."""
    if not rows:
        return ",".join(header) + "\n" if header else ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return out.getvalue()
