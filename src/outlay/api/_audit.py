"""Period close and audit endpoints: seal a month, read (and re-verify) its seal, and the audit
export of one tenant's operations, published with the seal in ``X-Outlay-Seal``."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from outlay._errors import Conflict, NotFound
from outlay.finance import (
    Period,
    Seal,
    audit_csv,
    audit_rows,
    close_period,
    parse_period,
    period_items,
    period_store_for,
    seal_items,
)

from ._endpoint import Call, Endpoint, Reply, attachment

__all__ = ["ENDPOINTS"]


def _path_period(call: Call) -> Period:
    return parse_period(call.path["period"])


def _sealed(call: Call, month: Period) -> Seal:
    seal = period_store_for(call.outlay.ledger).get(month.name)
    if seal is None:
        raise NotFound(f"{month.name} is not closed", field="period")
    return seal


def close(call: Call) -> Reply:
    month = _path_period(call)
    ledger = call.reports().ledger  # embedded: caught up with the event log first
    # A seal is final: it must cover every event already recorded. With a separate worker (NATS)
    # the API cannot catch up itself, so it refuses while the worker is behind the log.
    outlay = call.outlay
    behind = outlay.log.end_offset() - outlay.log.committed(outlay.writer.consumer)
    if behind > 0:
        raise Conflict(
            f"the ledger is {behind} event(s) behind the event log: a seal of {month.name} now could"
            " miss some; let `outlay worker` catch up, then close the period"
        )
    seal, created = close_period(ledger, month, period_store_for(ledger), closed_by=call.principal.name)
    return Reply({"created": created, **seal.to_json()}, status=201 if created else 200)


def seal_of(call: Call) -> dict[str, Any]:
    month = _path_period(call)
    ledger = call.reports().ledger
    store = period_store_for(ledger)
    seal = _sealed(call, month)
    tenant = call.principal.tenant
    items = period_items(ledger, store, month)
    if tenant is not None:
        items = [i for i in items if i.tenant == tenant]
        now = seal_items(month.name, items, seal.closed_at)
        body = seal.to_json(tenant)
        return {**body, "verified": now.sha256 == body["sha256"]}
    return {**seal.to_json(), "verified": seal_items(month.name, items, seal.closed_at).sha256 == seal.sha256}


def seal_header(seal: Seal, tenant: str) -> str:
    """``X-Outlay-Seal``: the tenant's part of the seal as ``name=value`` pairs; the tenant is
    percent-encoded (RFC 3986) so that any name fits a header (``acme`` stays ``acme``)."""
    part = seal.to_json(tenant)
    fields = ("period", "tenant", "sha256", "entries", "total", "closed_at")
    part["total"] = part["total"] or "unknown"  # (entries, none of them priced)
    return "; ".join(
        f"{name}={quote(part[name], safe='') if name == 'tenant' else part[name]}" for name in fields
    )


def audit_export(call: Call) -> Reply:
    tenant = call.principal.scope_tenant(call.path["tenant"])
    assert tenant is not None
    call.check_tenant(tenant)
    month = parse_period(call.query.get("period"))
    ledger = call.reports().ledger
    store = period_store_for(ledger)
    body = audit_csv(audit_rows(ledger, store, tenant, month))
    headers = {"Content-Disposition": attachment(f"{tenant}-{month.name}-audit.csv")}
    seal = store.get(month.name)
    if seal is not None:
        headers["X-Outlay-Seal"] = seal_header(seal, tenant)
    return Reply(body, media_type="text/csv; charset=utf-8", headers=headers)


ENDPOINTS: Final = (
    Endpoint("POST", "/api/v1/periods/{period}/close", close,
             "Close a billing month: seal its entries with a SHA-256 (closing again returns the seal)",
             tag="periods", admin_only=True, responses={201: "sealed now", 400: "the month has not ended",
                                                        409: "the ledger is behind its event log"}),
    Endpoint("GET", "/api/v1/periods/{period}", seal_of,
             "The seal of a closed month, re-verified (a tenant token gets its own part)",
             tag="periods", responses={404: "the month is not closed"}),
    Endpoint("GET", "/api/v1/tenants/{tenant}/audit.csv", audit_export,
             "Every operation of a tenant in a month with cost, price version, runs, region and retention",
             ("period",), tag="periods", responses={404: "unknown tenant"}, media="text/csv"),
)  # fmt: skip
