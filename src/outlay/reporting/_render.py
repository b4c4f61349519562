"""Machine-readable renderings of report rows (the CLI's ``--format json|csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

__all__ = ["csv_cell", "csv_value", "json_bytes", "render_csv", "render_json"]

# A cell a spreadsheet would run as a formula (=, +, -, @, or a tab/CR before one): CSV injection.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_ORJSON_MAX_DEPTH: Final = 255  # orjson refuses to nest deeper ("Recursion limit reached")


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
    """``report`` as indented JSON; costs are already decimal strings, so nothing becomes a float.

    A document nested deeper than orjson allows (255 levels: a run tree over 127 runs deep) comes out
    compact instead of indented, since its indentation alone would grow with the square of its depth.
    """
    try:
        return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:
        if not _too_deep(report):
            raise
    return json_bytes(report).decode()


def json_bytes(value: object) -> bytes:
    """``value`` as compact JSON: orjson, or an iterative walk of the dicts and lists when it is nested
    deeper than orjson's limit of 255 levels (scalars and keys are still encoded by orjson)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        if not _too_deep(value):
            raise
    parts: list[bytes] = []
    # Each item: bytes to write as they are, or a value still to encode.
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            parts.append(item)
        elif isinstance(item, dict) and item:
            todo: list[object] = [b"{"]
            for index, (key, child) in enumerate(item.items()):
                if not isinstance(key, str):
                    raise TypeError(f"JSON object keys must be strings, got {key!r}")
                todo += [(b"," if index else b"") + orjson.dumps(key) + b":", child]
            todo.append(b"}")
            stack.extend(reversed(todo))
        elif isinstance(item, list | tuple) and item:
            todo = [b"["]
            for index, child in enumerate(item):
                todo += [b","] if index else []
                todo.append(child)
            todo.append(b"]")
            stack.extend(reversed(todo))
        else:
            parts.append(orjson.dumps(item))
    return b"".join(parts)


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests dicts and lists more than orjson's 255 levels (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > _ORJSON_MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


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
