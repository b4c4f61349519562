"""Margin per tenant per billing period: revenue (from the plans file) minus cost (from the ledger).

Unknown is never zero: when a tenant has unpriced events its cost is only a lower bound, so its
margin is flagged — ``bound="at_most"`` for fixed revenue (more cost can only lower it),
``"at_least"`` for a markup (revenue grows with the unknown cost too) — and a tenant with no plan
has no margin at all rather than a margin of ``-cost``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from outlay._money import MONEY_CONTEXT, money_str, to_money
from outlay.ledger import LedgerStore, Totals
from outlay.reporting import Reports

from ._period import Period, parse_period
from ._plans import REVENUE_CONTEXT, Plans

__all__ = ["TenantCost", "TenantMargin", "margins", "tenant_costs"]

_RATIO_CONTEXT: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)
# Rounding a ratio to 6 places: wide enough for any ratio of two amounts (a tiny fee and a big cost).
_ROUND_CONTEXT: Final = Context(prec=200, rounding=ROUND_HALF_EVEN)
_PLACES: Final = Decimal("0.000001")
DECISION_PREFIX: Final = "decision:"


@dataclass(frozen=True, slots=True)
class TenantCost:
    """What a tenant cost over a window: exact known cost, how many events are unpriced, tokens."""

    tenant: str
    events: int
    unpriced_events: int
    cost: Decimal | None
    tokens: int


@dataclass(frozen=True, slots=True)
class TenantMargin:
    tenant: str
    plan: str | None
    revenue: Decimal | None
    cost: Decimal | None
    margin: Decimal | None
    ratio: Decimal | None
    events: int
    unpriced_events: int
    bound: str  # "exact", "at_most", "at_least" or "unknown"

    def to_json(self) -> dict[str, Any]:
        def text(amount: Decimal | None) -> str | None:
            return None if amount is None else money_str(amount)

        return {
            "tenant": self.tenant,
            "plan": self.plan,
            "revenue": text(self.revenue),
            "cost": text(self.cost),
            "margin": text(self.margin),
            "margin_ratio": None if self.ratio is None else str(self.ratio),
            "events": self.events,
            "unpriced_events": self.unpriced_events,
            "bound": self.bound,
        }


def _add(total: Decimal | None, amount: Decimal | None) -> Decimal | None:
    if amount is None:
        return total
    return amount if total is None else MONEY_CONTEXT.add(total, amount)


def tenant_costs(
    ledger: LedgerStore, period: Period, *, environment: str | None = "production"
) -> dict[str, TenantCost]:
    """Cost per tenant over ``period`` (budget decisions, which cost nothing, left out)."""
    found: list[Totals] = Reports(ledger).totals(
        ("tenant", "operation"), period.start, period.end, environment=environment
    )
    merged: dict[str, TenantCost] = {}
    for t in found:
        tenant, operation = t.key
        if tenant is None or (operation or "").startswith(DECISION_PREFIX):
            continue
        seen = merged.get(tenant, TenantCost(tenant, 0, 0, None, 0))
        merged[tenant] = TenantCost(
            tenant,
            seen.events + t.events,
            seen.unpriced_events + t.unpriced_events,
            _add(seen.cost, t.cost),
            seen.tokens + t.input_tokens + t.output_tokens,
        )
    return merged


def _margin(tenant: str, plans: Plans, spent: TenantCost) -> TenantMargin:
    plan = plans.get(tenant)
    if plan is None:
        return TenantMargin(
            tenant, None, None, spent.cost, None, None, spent.events, spent.unpriced_events, "unknown"
        )
    # No events: a known zero. Events none of which is priced: unknown, and so is the margin (a
    # margin over a cost taken as 0 would rank the tenant the most profitable of all).
    cost = spent.cost if spent.cost is not None else (Decimal(0) if spent.events == 0 else None)
    revenue = plan.revenue(cost, spent.tokens)
    margin = None if revenue is None or cost is None else REVENUE_CONTEXT.subtract(revenue, cost)
    if margin is None:
        bound = "unknown"
    elif spent.unpriced_events == 0:
        bound = "exact"
    else:
        bound = (
            "at_least" if plan.depends_on_cost and plan.markup is not None and plan.markup >= 1 else "at_most"
        )
    ratio = None
    if margin is not None and revenue:
        ratio = _RATIO_CONTEXT.divide(margin, revenue).quantize(_PLACES, context=_ROUND_CONTEXT)
    return TenantMargin(
        tenant, plan.model, revenue, cost, margin, ratio, spent.events, spent.unpriced_events, bound
    )


def _maybe_below(row: TenantMargin, below: Decimal) -> bool:
    """Whether the tenant's margin ratio is, or might be, under ``below``."""
    if row.bound in ("at_most", "unknown"):
        return True
    if row.ratio is None:  # no revenue: an exact margin is below only if it loses money
        return row.margin is None or row.margin < 0
    return row.ratio < below


def _threshold(value: object) -> Decimal:
    """``below`` as an exact ``Decimal``: a ``Decimal``, an ``int`` or a decimal string ("0.2"); it
    may be negative (a loss ratio). A float, having lost its exact value, is refused."""
    return to_money(value, field="below", allow_negative=True)


def margins(
    ledger: LedgerStore,
    plans: Plans,
    period: str | Period,
    *,
    environment: str | None = "production",
    below: Decimal | int | str | None = None,
) -> list[TenantMargin]:
    """Margin of every tenant that has a plan or spent anything in ``period`` (``YYYY-MM``).

    With ``below``, only tenants whose margin ratio is under it — or *might* be: a margin that is
    only an upper bound, or unknown, cannot be ruled out and is kept, flagged by ``bound``.
    """
    month = period if isinstance(period, Period) else parse_period(period)
    spent = tenant_costs(ledger, month, environment=environment)
    tenants: Iterable[str] = sorted(set(spent) | set(plans.by_tenant))
    rows = [_margin(t, plans, spent.get(t, TenantCost(t, 0, 0, None, 0))) for t in tenants]
    if below is not None:
        threshold = _threshold(below)
        rows = [r for r in rows if _maybe_below(r, threshold)]
    return sorted(rows, key=lambda r: (r.ratio is None, r.ratio if r.ratio is not None else 0, r.tenant))
