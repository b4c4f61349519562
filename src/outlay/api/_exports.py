"""CSV and Parquet exports of a billing period: a tenant's invoice lines and its ledger entries.

Both formats carry the same rows and columns. Each export carries ``X-Outlay-SHA256``, the hash of
the exact bytes sent, so a customer can check later that a file they were given is the one outlay
produced. Parquet needs the ``parquet`` extra (pyarrow); without it the endpoint answers 501.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay.reporting import csv_cell

from ._billing import invoice_lines
from ._endpoint import Call, Endpoint, Reply, attachment
from ._events import entry_json
from ._params import Filters, parse_period
from ._parquet import (
    BOOLEAN,
    INSTANT,
    INTEGER,
    MEDIA_TYPE,
    MONEY,
    MissingExtra,
    Unrepresentable,
    parquet_bytes,
)

__all__ = ["ENDPOINTS"]

_ENTRY_COLUMNS: Final = (
    "event_id", "time", "tenant_id", "workspace_id", "user_id", "feature", "environment", "attribution",
    "origin", "request_id", "run_id", "parent_run_id", "root_run_id", "agent", "operation", "provider",
    "model", "status", "priced", "cost", "recorded_cost", "currency", "price_version", "unpriced_reason",
    "adjustments", "region", "retention",
)  # fmt: skip
_LINE_COLUMNS: Final = ("feature", "operation", "model", "events", "unpriced_events", "cost",
                        "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                        "reasoning_tokens")  # fmt: skip
#: Parquet types of the columns that are not strings.
_KINDS: Final = {
    "time": INSTANT, "priced": BOOLEAN, "cost": MONEY, "recorded_cost": MONEY, "adjustments": INTEGER,
    "events": INTEGER, "unpriced_events": INTEGER, "input_tokens": INTEGER, "cache_read_tokens": INTEGER,
    "cache_write_tokens": INTEGER, "output_tokens": INTEGER, "reasoning_tokens": INTEGER,
}  # fmt: skip


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])  # never a formula in a spreadsheet
    return buffer.getvalue().encode()


def _reply(body: bytes, name: str, media_type: str) -> Reply:
    headers = {
        "Content-Disposition": attachment(name),
        "X-Outlay-SHA256": hashlib.sha256(body).hexdigest(),
    }
    return Reply(body, media_type=media_type, headers=headers)


@dataclass(frozen=True, slots=True)
class _Export:
    tenant: str
    period: str
    what: str
    environment: str
    columns: tuple[str, ...]
    rows: Iterable[dict[str, Any]]

    def filename(self, suffix: str) -> str:
        return f"{self.tenant}-{self.period}-{self.what}.{suffix}"


def _export(call: Call) -> _Export:
    """The rows of the export asked for (both formats share them)."""
    tenant = call.principal.scope_tenant(call.path["tenant"])
    assert tenant is not None
    call.check_tenant(tenant)
    period, window = parse_period(call.query.get("period"))
    what = call.query.get("what") or "invoice"
    if what not in ("invoice", "entries"):
        raise InvalidInput(f"must be invoice or entries, got {what!r}", field="what")
    environment = call.query.filters().get("environment") or "production"
    if what == "invoice":
        lines = invoice_lines(call, tenant, window, environment)["lines"]
        return _Export(tenant, period, what, environment, _LINE_COLUMNS, lines)
    call.reports()  # catch the ledger up first
    filters = Filters({"tenant": tenant, "environment": environment})
    rows = (
        entry_json(e)
        for e in call.outlay.ledger.entries(window.start, window.end, tenant=tenant)
        if e.event.tenant_id == filters.get("tenant") and e.event.environment == environment
    )
    return _Export(tenant, period, "entries", environment, _ENTRY_COLUMNS, rows)


def export_csv(call: Call) -> Reply:
    export = _export(call)
    body = _csv(export.columns, export.rows)
    return _reply(body, export.filename("csv"), "text/csv; charset=utf-8")


def _failure(status: int, error: str, exc: InvalidInput) -> Reply:
    message = str(exc).removeprefix(f"{exc.field}: ")
    return Reply({"error": error, "field": exc.field, "message": message}, status=status)


def export_parquet(call: Call) -> Reply:
    export = _export(call)
    metadata = {"outlay.tenant": export.tenant, "outlay.period": export.period, "outlay.what": export.what,
                "outlay.environment": export.environment}  # fmt: skip
    try:
        body = parquet_bytes(export.columns, _KINDS, export.rows, metadata)
    except MissingExtra as exc:  # the server lacks an optional part: not the caller's mistake
        return _failure(501, "not_implemented", exc)
    except Unrepresentable as exc:  # the request is fine; the format cannot carry the value exactly
        return _failure(422, "not_representable", exc)
    return _reply(body, export.filename("parquet"), MEDIA_TYPE)


ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/tenants/{tenant}/export.csv", export_csv,
             "CSV of a tenant's invoice lines (what=invoice) or ledger entries (what=entries) for a month",
             ("period", "what", "environment"), tag="billing", responses={404: "unknown tenant"},
             media="text/csv"),
    Endpoint("GET", "/api/v1/tenants/{tenant}/export.parquet", export_parquet,
             "The same export as Parquet: typed columns, money as exact decimal128(38, 24)",
             ("period", "what", "environment"), tag="billing",
             responses={404: "unknown tenant", 422: "a cost with more than 24 decimal places (use the CSV)",
                        501: "the server lacks the parquet extra (pyarrow)"}, media=MEDIA_TYPE),
)  # fmt: skip
