"""Pricing simulator: what each tenant would pay for a period under a proposed consumption price,
applied to its recorded history, against what it pays under its current plan."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import money_str
from outlay.ledger import LedgerStore

from ._margin import TenantCost, tenant_costs
from ._period import Period, parse_period
from ._plans import REVENUE_CONTEXT, Plans, check_rate

__all__ = ["Proposal", "Simulated", "simulate"]

_MILLION: Final = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A consumption price: ``markup`` x cost, or ``per_1m_tokens`` per million tokens."""

    markup: Decimal | None = None
    per_1m_tokens: Decimal | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("markup", "per_1m_tokens") if getattr(self, n) is not None]
        if len(given) != 1:
            raise InvalidInput("give exactly one of markup or per_1m_tokens", field="proposal")
        value = getattr(self, given[0])
        if not isinstance(value, Decimal):
            raise InvalidInput(f"must be a Decimal, got {type(value).__name__}", field=given[0])
        check_rate(value, given[0])

    def price(self, spent: TenantCost) -> Decimal | None:
        if self.markup is not None:
            return None if spent.cost is None else REVENUE_CONTEXT.multiply(spent.cost, self.markup)
        assert self.per_1m_tokens is not None
        return REVENUE_CONTEXT.divide(
            REVENUE_CONTEXT.multiply(self.per_1m_tokens, Decimal(spent.tokens)), _MILLION
        )


@dataclass(frozen=True, slots=True)
class Simulated:
    tenant: str
    cost: Decimal | None
    current: Decimal | None
    proposed: Decimal | None
    unpriced_events: int

    def to_json(self) -> dict[str, Any]:
        def text(amount: Decimal | None) -> str | None:
            return None if amount is None else money_str(amount)

        change = None
        if self.current is not None and self.proposed is not None:
            change = REVENUE_CONTEXT.subtract(self.proposed, self.current)
        return {
            "tenant": self.tenant,
            "cost": text(self.cost),
            "current": text(self.current),
            "proposed": text(self.proposed),
            "change": text(change),
            "unpriced_events": self.unpriced_events,
            "complete": self.unpriced_events == 0,
        }


def simulate(
    ledger: LedgerStore,
    proposal: Proposal,
    period: str | Period,
    *,
    plans: Plans | None = None,
    tenants: frozenset[str] | None = None,
    environment: str | None = "production",
) -> list[Simulated]:
    """Per tenant: current revenue (``None`` without a plan) vs the proposed price over ``period``.
    With unpriced events a markup price is a lower bound, flagged by ``complete: false``."""
    month = period if isinstance(period, Period) else parse_period(period)
    rows: list[Simulated] = []
    for tenant, spent in sorted(tenant_costs(ledger, month, environment=environment).items()):
        if tenants is not None and tenant not in tenants:
            continue
        plan = plans.get(tenant) if plans is not None else None
        current = plan.revenue(spent.cost, spent.tokens) if plan is not None else None
        rows.append(Simulated(tenant, spent.cost, current, proposal.price(spent), spent.unpriced_events))
    return rows
