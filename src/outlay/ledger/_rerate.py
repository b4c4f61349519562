"""Re-rating: price a window of the ledger again and append adjustments — history is never rewritten.

Use it after a price correction, or when events that were unpriced (a model with no price yet) can
now be priced. Running it again with the same prices appends nothing: an adjustment is appended
only where the new cost differs from the event's current effective cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from outlay._errors import InvalidInput, InvalidUsage
from outlay._money import MONEY_CONTEXT, ZERO, money_sum
from outlay._rating import Rating
from outlay.events import CALLER_PRICED, CostEvent
from outlay.pricing import PriceCatalog

from ._base import LedgerStore
from ._rows import check_adjustment_time, wants_adjustment
from ._window import parse_window

__all__ = ["RateFunction", "RerateResult", "catalog_rater", "rerate"]

#: Prices one event; ``None`` means "no opinion" (the event is left as it is).
RateFunction = Callable[[CostEvent], Rating | None]


#: How the price_version of a cost a catalog rated begins: a genai-prices or an overrides record, or
#: the catalog itself (genai-prices@0.2.3+overrides@...) when it had no price.
_CATALOG_SOURCES: Final = ("genai-prices@", "overrides@")


def catalog_rater(catalog: PriceCatalog) -> RateFunction:
    """The rate function that re-rates what the catalog priced, and nothing else. It leaves alone:
    events with no provider or model (tools, custom units: the catalog knows nothing of them),
    events whose cost the caller gave (``price_version="caller"``), any other priced event whose
    cost no catalog gave (the gateway's ``not-billed:upstream-error``, an ingested event's own
    price), and events whose usage is incomplete — a lower bound (a cut stream, the gateway's
    estimate) is never priced as the cost. Unpriced events are rated, whatever their version."""

    def rate(event: CostEvent) -> Rating | None:
        if event.provider is None or event.model is None or event.price_version == CALLER_PRICED:
            return None
        if event.priced and not (event.price_version or "").startswith(_CATALOG_SOURCES):
            return None
        if not event.usage.complete:
            return None
        return catalog.rate(event.usage, provider=event.provider, model=event.model, at=event.time)

    return rate


@dataclass(frozen=True, slots=True)
class RerateResult:
    """What a re-rating did. ``delta`` is exact; ``by_tenant`` keys ``None`` for unattributed spend."""

    examined: int
    adjusted: int
    newly_priced: int
    still_unpriced: int
    skipped: int
    delta: Decimal
    by_tenant: Mapping[str | None, Decimal] = field(default_factory=lambda: MappingProxyType({}))


def rerate(
    ledger: LedgerStore,
    rate: RateFunction,
    start: object,
    end: object,
    *,
    batch_size: int = 1000,
    at: datetime | None = None,
) -> RerateResult:
    """Re-rate every event with ``start <= time < end`` with ``rate`` and append the adjustments.

    ``skipped`` counts events ``rate`` returned ``None`` for and priced events it could not price
    (an unknown price never erases a known cost).
    """
    window = parse_window(start, end)
    check_adjustment_time(at)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"must be a positive integer, got {batch_size!r}", field="batch_size")
    examined = adjusted = newly_priced = still_unpriced = skipped = 0
    by_tenant: dict[str | None, Decimal] = {}
    tenant_of: dict[str, str | None] = {}
    pending: list[tuple[str, Rating]] = []

    def flush() -> None:
        nonlocal adjusted, newly_priced
        for adjustment in ledger.append_adjustments(pending, at=at):
            adjusted += 1
            newly_priced += adjustment.previous_cost is None
            tenant = tenant_of[adjustment.event_id]
            by_tenant[tenant] = MONEY_CONTEXT.add(by_tenant.get(tenant, ZERO), adjustment.delta)
        pending.clear()
        tenant_of.clear()

    for entry in ledger.entries(window.start, window.end):
        examined += 1
        try:
            rating = rate(entry.event)
        except InvalidUsage:
            # One event whose usage cannot be rated exactly (a unit quantity of more digits than a
            # cost can carry) is left as it is, like an unknown price: it never stops the others.
            rating = None
        if rating is None:
            skipped += 1
        elif wants_adjustment(entry.priced, entry.cost, rating):
            pending.append((entry.event.event_id, rating))
            tenant_of[entry.event.event_id] = entry.event.tenant_id
            if len(pending) >= batch_size:
                flush()
        elif not rating.priced:
            if entry.priced:
                skipped += 1
            else:
                still_unpriced += 1
    if pending:
        flush()
    delta = money_sum(by_tenant.values())
    return RerateResult(
        examined, adjusted, newly_priced, still_unpriced, skipped, delta, MappingProxyType(by_tenant)
    )
