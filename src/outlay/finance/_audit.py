"""The audit export: every operation done for a tenant in a period, with its cost, price version,
run ids and data-handling metadata (region, retention), plus the corrections carried into it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import money_str
from outlay.ledger import LedgerStore
from outlay.reporting import csv_cell, csv_value

from ._period import Period, parse_period
from ._seal import CANONICAL_FIELDS, Item, canonical_sha256, period_items
from ._store import PeriodStore

__all__ = ["AUDIT_COLUMNS", "audit_csv", "audit_csv_sha256", "audit_rows"]

AUDIT_COLUMNS: Final = (
    "kind", "id", "event_id", "time", "tenant", "environment", "operation", "provider", "model",
    "feature", "agent", "run_id", "parent_run_id", "root_run_id", "input_tokens", "output_tokens",
    "priced", "cost", "unpriced_reason", "price_version", "region", "retention", "status", "request_id",
)  # fmt: skip


def _row(item: Item) -> dict[str, Any]:
    event = item.entry.event
    return {
        **item.canonical(),
        "feature": event.feature,
        "agent": event.agent,
        "parent_run_id": event.parent_run_id,
        "root_run_id": event.root_run_id,
        "priced": "true" if item.priced else "false",
        "cost": None if item.cost is None else money_str(item.cost),
        "unpriced_reason": None if item.priced else (item.entry.unpriced_reason or event.unpriced_reason),
        "region": event.region,
        "retention": event.retention,
        "status": event.status,
        "request_id": event.request_id,
    }


def audit_rows(
    ledger: LedgerStore, store: PeriodStore, tenant: str, period: str | Period
) -> list[dict[str, Any]]:
    """The audit rows of ``tenant`` for ``period`` (all environments), as sealed if it is closed."""
    month = period if isinstance(period, Period) else parse_period(period)
    chosen = [i for i in period_items(ledger, store, month) if i.tenant == tenant]
    chosen.sort(key=lambda i: (i.time, i.kind, i.id))
    return [_row(item) for item in chosen]


def audit_csv_sha256(body: bytes) -> str:
    """Recompute, from an audit export alone, the SHA-256 its tenant's part of the seal holds, so a
    customer can check ``X-Outlay-Seal`` without trusting anything else we send."""
    try:
        reader = csv.DictReader(io.StringIO(body.decode()))
        rows = [_canonical_of(row) for row in reader]
    except (UnicodeDecodeError, KeyError, ValueError) as exc:
        raise InvalidInput(f"not an outlay audit export: {exc}", field="body") from None
    return canonical_sha256(rows)


def _canonical_of(row: dict[str, str]) -> dict[str, Any]:
    # The CSV writes None as an empty cell; outlay never stores an empty string in these fields.
    out: dict[str, Any] = {name: (csv_value(row[name]) or None) for name in CANONICAL_FIELDS}
    out["input_tokens"] = int(row["input_tokens"])
    out["output_tokens"] = int(row["output_tokens"])
    if row["priced"] not in ("true", "false"):
        raise ValueError(f"priced must be true or false, got {row['priced']!r}")
    out["priced"] = row["priced"] == "true"
    return out


def audit_csv(rows: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in AUDIT_COLUMNS])  # never a formula in a spreadsheet
    return buffer.getvalue().encode()
