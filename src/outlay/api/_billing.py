"""Invoice lines per tenant per billing period, and budget decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay.budgets import DECISION_KINDS
from outlay.events import ENVIRONMENTS
from outlay.ledger import Totals, Window

from ._endpoint import Call, Endpoint
from ._params import Filters, parse_limit, parse_period
from ._query import add_cost, cost_text, filtered_totals, totals_row
from ._usage import window_json

__all__ = ["ENDPOINTS", "invoice_lines"]

_LINE_KEYS: Final = ("feature", "operation", "model")
_DECISION: Final = "decision:"


def invoice_lines(call: Call, tenant: str, window: Window, environment: str) -> dict[str, Any]:
    """The billable lines of ``tenant`` over ``window`` (budget decisions, which cost nothing, left
    out). ``total_cost`` sums the priced lines; ``unpriced_events`` says how much is still unknown."""
    filters = Filters({"tenant": tenant, "environment": environment})
    found = filtered_totals(call.reports(), _LINE_KEYS, window, filters)
    lines: list[Totals] = [t for t in found if not (t.key[1] or "").startswith(_DECISION)]
    total: Decimal | None = None
    for line in lines:
        total = add_cost(total, line.cost)
    return {
        "tenant": tenant,
        "environment": environment,
        "currency": "USD",
        "lines": [totals_row(_LINE_KEYS, t) for t in lines],
        "events": sum(t.events for t in lines),
        "unpriced_events": sum(t.unpriced_events for t in lines),
        "total_cost": cost_text(total) if lines else "0",
        "complete": all(t.unpriced_events == 0 for t in lines),
    }


def invoice(call: Call) -> dict[str, Any]:
    tenant = call.principal.scope_tenant(call.path["tenant"])
    assert tenant is not None
    call.check_tenant(tenant)
    period, window = parse_period(call.query.get("period"))
    environment = call.query.get("environment") or "production"
    if environment not in ENVIRONMENTS:
        raise InvalidInput(f"must be one of {', '.join(sorted(ENVIRONMENTS))}", field="environment")
    body = invoice_lines(call, tenant, window, environment)
    closed = window.end <= datetime.now(UTC)
    return {"period": period, "window": window_json(window), "period_ended": closed, **body}


def _decision_json(entry_event: Any) -> dict[str, Any]:
    labels = dict(entry_event.labels)
    row: dict[str, Any] = {
        "id": entry_event.event_id,
        "time": entry_event.time.isoformat(),
        "kind": entry_event.operation.removeprefix(_DECISION),
        "tenant": entry_event.tenant_id,
        "run_id": entry_event.run_id,
        "model": entry_event.model,
        "message": labels.pop("message", None),
    }
    # The other labels (limit, spent, scope, ...) are listed too, but never over the event's own
    # fields: labels are whatever the sender wrote, and a tenant's own "decision:" event labelled
    # tenant=globex must not read as a decision about globex.
    row.update((name, value) for name, value in labels.items() if name not in row)
    return row


def decisions(call: Call) -> dict[str, Any]:
    window = call.query.window()
    tenant = call.principal.scope_tenant(call.query.get("tenant"))
    if tenant is not None:
        call.check_tenant(tenant)
    kind = call.query.get("kind")
    if kind is not None and kind not in DECISION_KINDS:
        raise InvalidInput(f"must be one of {', '.join(sorted(DECISION_KINDS))}", field="kind")
    limit = parse_limit(call.query.get("limit"), default=100, maximum=1000)
    filters = Filters({} if tenant is None else {"tenant": tenant})
    reports = call.reports()
    prefix = _DECISION + (kind or "")
    # Find the days with decisions from the rollups, then read only those days' events.
    days = sorted(
        {str(t.key[0]) for t in filtered_totals(reports, ("day", "operation"), window, filters)
         if (t.key[1] or "").startswith(prefix)}
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    truncated = False
    for day in days:
        first = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
        low, high = max(first, window.start), min(first + timedelta(days=1), window.end)
        # The ledger filters on the prefix, so the day's other events are never decoded; a kind is
        # still compared exactly, as its prefix would also match a longer kind.
        for entry in call.outlay.ledger.entries(low, high, tenant=tenant, operation_prefix=prefix):
            event = entry.event
            if (kind is not None and event.operation != prefix) or (
                tenant is not None and event.tenant_id != tenant
            ):
                continue
            if len(rows) >= limit:
                truncated = True
                break
            rows.append(_decision_json(event))
        if truncated:
            break
    return {"window": window_json(window), "decisions": rows, "truncated": truncated}


ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/tenants/{tenant}/invoice", invoice,
             "Invoice lines of one tenant for a billing month (production only by default)",
             ("period", "environment"), tag="billing", responses={404: "unknown tenant"}),
    Endpoint("GET", "/api/v1/budgets/decisions", decisions,
             "Budget decisions (soft limits, denials, downgrades, stopped runs, throttling)",
             ("from", "to", "tenant", "kind", "limit"), tag="budgets"),
)  # fmt: skip
