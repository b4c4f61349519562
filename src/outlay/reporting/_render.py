"""Machine-readable renderings of report rows (the CLI's ``--format json|csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["render_csv", "render_json"]


def render_json(report: object) -> str:
    """``report`` as indented JSON; costs are already decimal strings, so nothing becomes a float."""
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def render_csv(rows: Sequence[Mapping[str, Any]], header: Sequence[str] = ()) -> str:
    """Rows as CSV with a header; an absent value (unknown cost, no tenant) is an empty cell. With
    no rows, the ``header`` line alone (so a script reading the file still finds its columns)."""
    if not rows:
        return ",".join(header) + "\n" if header else ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()
