"""CSV exports of a billing period: a tenant's invoice lines and its ledger entries.

Each export carries ``X-Outlay-SHA256``, the hash of the exact bytes sent, so a customer can check
later that a file they were given is the one outlay produced. (Sealing a *closed* period — storing
that hash and refusing later changes to it — is not done yet; see docs/api.md.)
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from typing import Any, Final

from outlay._errors import InvalidInput

from ._billing import invoice_lines
from ._endpoint import Call, Endpoint, Reply
from ._events import entry_json
from ._params import Filters, parse_period

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


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue().encode()


def _reply(body: bytes, name: str) -> Reply:
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Outlay-SHA256": hashlib.sha256(body).hexdigest(),
    }
    return Reply(body, media_type="text/csv; charset=utf-8", headers=headers)


def _scope(call: Call) -> tuple[str, str, Any]:
    tenant = call.principal.scope_tenant(call.path["tenant"])
    assert tenant is not None
    call.check_tenant(tenant)
    period, window = parse_period(call.query.get("period"))
    what = call.query.get("what") or "invoice"
    if what not in ("invoice", "entries"):
        raise InvalidInput(f"must be invoice or entries, got {what!r}", field="what")
    return tenant, period, (what, window)


def export_csv(call: Call) -> Reply:
    tenant, period, (what, window) = _scope(call)
    environment = call.query.filters().get("environment") or "production"
    if what == "invoice":
        lines = invoice_lines(call, tenant, window, environment)["lines"]
        return _reply(_csv(_LINE_COLUMNS, lines), f"{tenant}-{period}-invoice.csv")
    call.reports()  # catch the ledger up first
    filters = Filters({"tenant": tenant, "environment": environment})
    rows = (
        entry_json(e)
        for e in call.outlay.ledger.entries(window.start, window.end)
        if e.event.tenant_id == filters.get("tenant") and e.event.environment == environment
    )
    return _reply(_csv(_ENTRY_COLUMNS, rows), f"{tenant}-{period}-entries.csv")


ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/tenants/{tenant}/export.csv", export_csv,
             "CSV of a tenant's invoice lines (what=invoice) or ledger entries (what=entries) for a month",
             ("period", "what", "environment"), tag="billing", responses={404: "unknown tenant"}),
)  # fmt: skip
