"""Properties of the seal over generated months: exact totals, order independence, sensitivity."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from outlay.finance import InMemoryPeriodStore, close_period, period_items, seal_items, verify_period
from outlay.ledger import InMemoryLedger

from .conftest import MARCH, event

COSTS = st.decimals(min_value=0, max_value=1000, places=18, allow_nan=False, allow_infinity=False)
CLOSE = datetime(2026, 4, 1, tzinfo=UTC)


@settings(max_examples=40, deadline=None)
@given(costs=st.lists(st.one_of(st.none(), COSTS), min_size=1, max_size=12), data=st.data())
def test_seal_total_is_exact_and_order_free(costs: list[Decimal | None], data: st.DataObject) -> None:
    ledger = InMemoryLedger()
    ledger.write(
        [
            event(time=MARCH + timedelta(minutes=n), cost=c, priced=c is not None, tenant_id=f"t{n % 3}")
            for n, c in enumerate(costs)
        ]
    )
    store = InMemoryPeriodStore()
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    known = [c for c in costs if c is not None]
    # Entries none of which is priced make an unknown total, never 0.
    assert seal.total == (sum(known, Decimal(0)) if known else None)
    assert seal.unpriced == costs.count(None)
    assert sum(p.entries for p in seal.tenants.values()) == len(costs)
    items = period_items(ledger, store, "2026-03")
    shuffled = data.draw(st.permutations(items))
    assert seal_items("2026-03", shuffled, CLOSE).sha256 == seal.sha256
    index = data.draw(st.integers(0, len(items) - 1))
    changed = dataclasses.replace(items[index], cost=(items[index].cost or Decimal(0)) + Decimal("1e-18"))
    tampered = [*items[:index], changed, *items[index + 1 :]]
    assert not verify_period(ledger, "2026-03", store, items=tampered).ok
    ledger.close()
