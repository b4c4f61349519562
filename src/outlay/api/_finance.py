"""Finance endpoints: margins per tenant, spikes, runaway runs and the pricing simulator.

The plans file is read from ``$OUTLAY_PLANS`` on each request (it is small), so an edited file
takes effect without a restart and a broken one is a clear 400 naming the field, not a crash.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from outlay._errors import ConfigError, InvalidInput
from outlay.events import ENVIRONMENTS
from outlay.finance import Plans, Proposal, load_plans, margins, parse_period, runaway_runs, simulate, spikes

from ._endpoint import Call, Endpoint, Reply
from ._openapi import PARAMETERS
from ._usage import window_json

__all__ = ["ENDPOINTS", "PLANS_ENV"]

PLANS_ENV: Final = "OUTLAY_PLANS"


def plans_from_environment(*, required: bool) -> Plans | None:
    source = os.environ.get(PLANS_ENV)
    if not source:
        if required:
            raise ConfigError(
                f"no plans file is configured; set {PLANS_ENV} to a plans TOML file", field="plans"
            )
        return None
    return load_plans(source)


def _decimal(raw: str | None, name: str, default: Decimal) -> Decimal:
    if raw is None:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"must be a decimal number, got {raw!r}", field=name) from None
    if not value.is_finite():
        raise InvalidInput(f"must be a finite number, got {raw!r}", field=name)
    return value


def _int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise InvalidInput(f"must be a whole number, got {raw!r}", field=name)
    return int(raw)


def _environment(call: Call) -> str:
    environment = call.query.get("environment") or "production"
    if environment not in ENVIRONMENTS:
        raise InvalidInput(f"must be one of {', '.join(sorted(ENVIRONMENTS))}", field="environment")
    return environment


def _tenant(call: Call) -> str | None:
    tenant = call.principal.scope_tenant(call.query.get("tenant"))
    if tenant is not None:
        call.check_tenant(tenant)
    return tenant


def margin_table(call: Call) -> dict[str, Any]:
    month = parse_period(call.query.get("period"))
    below = call.query.get("below")
    threshold = None if below is None else _decimal(below, "below", Decimal(0))
    plans = plans_from_environment(required=True)
    assert plans is not None
    environment = _environment(call)
    rows = margins(call.reports().ledger, plans, month, environment=environment, below=threshold)
    return {
        "period": month.name,
        "environment": environment,
        "below": below,
        "currency": "USD",
        "rows": [r.to_json() for r in rows],
    }


def _non_negative(value: Decimal, name: str) -> Decimal:
    """``value`` checked here, so that the error names the query parameter (``min``), not the
    Python argument it is passed as (``minimum``)."""
    if value < 0:
        raise InvalidInput(f"must not be negative, got {value}", field=name)
    return value


def spike_list(call: Call) -> dict[str, Any]:
    window = call.query.window(default_days=7)
    tenant = _tenant(call)
    by = call.query.get("by") or "tenant"
    end = (
        window.end.date() + timedelta(days=1)
        if window.end.time() != window.end.min.time()
        else window.end.date()
    )
    found = spikes(
        call.reports().ledger,
        window.start.date(),
        end,
        by=by,
        tenant=tenant,
        factor=_decimal(call.query.get("factor"), "factor", Decimal(3)),
        minimum=_non_negative(_decimal(call.query.get("min"), "min", Decimal(1)), "min"),
        baseline_days=_int(call.query.get("days"), "days", 14),
        environment=_environment(call),
    )
    return {"window": window_json(window), "by": by, "tenant": tenant, "spikes": [s.to_json() for s in found]}


def runaway_list(call: Call) -> dict[str, Any]:
    window = call.query.window()
    tenant = _tenant(call)
    found = runaway_runs(
        call.reports().ledger,
        window.start,
        window.end,
        tenant=tenant,
        factor=_decimal(call.query.get("factor"), "factor", Decimal(5)),
        minimum=_decimal(call.query.get("min"), "min", Decimal(0)),
        min_runs=_int(call.query.get("min_runs"), "min_runs", 5),
        environment=_environment(call),
    )
    return {"window": window_json(window), "tenant": tenant, "runs": [r.to_json() for r in found]}


_BODY_KEYS: Final = frozenset({"period", "markup", "per_1m_tokens", "tenants", "environment"})


def _money_field(body: dict[str, Any], name: str) -> Decimal | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise InvalidInput('must be a decimal string such as "1.3" (floats lose exactness)', field=name)
    return _decimal(str(raw), name, Decimal(0))


def simulate_prices(call: Call) -> Reply:
    try:
        body = orjson.loads(call.body)
    except orjson.JSONDecodeError:
        raise InvalidInput("must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("must be a JSON object", field="body")
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise InvalidInput(f"unknown key; give {', '.join(sorted(_BODY_KEYS))}", field=unknown[0])
    month = parse_period(body.get("period"))
    proposal = Proposal(
        markup=_money_field(body, "markup"), per_1m_tokens=_money_field(body, "per_1m_tokens")
    )
    tenants = body.get("tenants")
    if tenants is not None and (
        not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants)
    ):
        raise InvalidInput("must be a list of tenant ids", field="tenants")
    environment = body.get("environment", "production")
    if not isinstance(environment, str) or environment not in ENVIRONMENTS:  # (a list is unhashable)
        raise InvalidInput(f"must be one of {', '.join(sorted(ENVIRONMENTS))}", field="environment")
    rows = simulate(
        call.reports().ledger,
        proposal,
        month,
        plans=plans_from_environment(required=False),
        tenants=None if tenants is None else frozenset(tenants),
        environment=environment,
    )
    proposed = (
        {"markup": body.get("markup")}
        if proposal.markup is not None
        else {"per_1m_tokens": body.get("per_1m_tokens")}
    )
    return Reply(
        {"period": month.name, "proposal": proposed, "currency": "USD", "rows": [r.to_json() for r in rows]}
    )


_NUMBER: Final = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}
# The OpenAPI document describes every query parameter from this shared table; these are ours.
PARAMETERS.update({
    "below": ("Only tenants whose margin ratio is under this (e.g. 0.2), or may be.", _NUMBER),
    "factor": ("How many times the baseline (median) counts as a spike or runaway.", _NUMBER),
    "min": ("Ignore amounts at or under this many USD.", _NUMBER),
    "days": ("Days of trailing baseline (default 14).", {"type": "integer", "minimum": 1, "maximum": 366}),
    "min_runs": ("Runs an agent needs before its median counts (default 5).",
                 {"type": "integer", "minimum": 2}),
})  # fmt: skip

_WINDOW: Final = ("from", "to", "tenant", "environment", "factor", "min")

ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/finance/margins", margin_table,
             "Revenue (plans file), cost and margin per tenant for a month; below= keeps those under a ratio",
             ("period", "below", "environment"), tag="finance", admin_only=True),
    Endpoint("GET", "/api/v1/finance/spikes", spike_list,
             "Days a tenant's or agent's cost exceeded factor x the median of its previous days",
             (*_WINDOW, "by", "days"), tag="finance"),
    Endpoint("GET", "/api/v1/finance/runaway-runs", runaway_list,
             "Runs whose rolled-up cost is far above the median run of the same agent",
             (*_WINDOW, "min_runs"), tag="finance"),
    Endpoint("POST", "/api/v1/finance/simulate", simulate_prices,
             "What each tenant would pay for a month under a proposed consumption price",
             tag="finance", admin_only=True,
             body='{"period": "2026-03", "markup": "1.3"} or {"period": ..., "per_1m_tokens": "2.5"}'),
)  # fmt: skip
