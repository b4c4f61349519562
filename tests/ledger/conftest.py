"""Helpers for the ledger tests: cost events with awkward exact costs, ledgers of every kind."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from outlay._usage import Usage
from outlay.events import CostEvent
from outlay.ledger import InMemoryLedger, LedgerStore, SQLiteLedger

D = Decimal
#: A Monday, mid-month, so day boundaries are easy to reason about.
T0 = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)
# Costs chosen to break anything that rounds: 18-decimal prices times token counts.
AWKWARD_PRICES = (
    D("0.000000018750000000"),
    D("0.000000123456789012345678"),
    D("0.000002500000000000000001"),
    D("0.000000000000000001"),
)


def event(**fields: Any) -> CostEvent:
    """A priced, attributed chat event at ``T0`` unless told otherwise."""
    values: dict[str, Any] = {
        "time": T0,
        "tenant_id": "acme",
        "feature": "search",
        "agent": "planner",
        "provider": "openai",
        "model": "gpt-4o",
        "priced": True,
        "cost": D("0.0125"),
        "price_version": "v1",
    }
    values.update(fields)
    if values.get("tenant_id") is None:
        values["tenant_id"] = None
        values.setdefault("attribution", "unattributed")
    if not values["priced"]:
        values["cost"] = None
        values.setdefault("unpriced_reason", "no price for openai/gpt-x")
    return CostEvent(**values)


def unpriced(**fields: Any) -> CostEvent:
    return event(priced=False, **fields)


def awkward_events(
    count: int, *, start: datetime = T0, step: timedelta = timedelta(minutes=7)
) -> list[CostEvent]:
    """``count`` events across tenants, days, models; costs are 18-decimal price x tokens; every
    seventh event is unpriced and every eleventh unattributed."""
    tenants = ("acme", "globex", "initech", "umbrella")
    events = []
    for i in range(count):
        tokens = 1 + (i * 7919) % 50_000
        price = AWKWARD_PRICES[i % len(AWKWARD_PRICES)]
        fields: dict[str, Any] = {
            "time": start + step * i,
            "tenant_id": None if i % 11 == 0 else tenants[i % len(tenants)],
            "origin": f"job-{i % 3}" if i % 11 == 0 else None,
            "feature": ("search", "chat", "summarise")[i % 3],
            "model": ("gpt-4o", "claude-sonnet-4", "gemini-2.5-pro")[i % 3],
            "environment": ("production", "staging")[i % 2],
            "run_id": f"run-{i % 5}",
            "cost": price * tokens,
            "priced": i % 7 != 0,
        }
        fields["usage"] = Usage(input_tokens=tokens, output_tokens=i % 100)
        events.append(event(**fields))
    return events


LedgerFactory = Callable[[], LedgerStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """A factory of fresh, empty ledgers of one kind (several per test for hypothesis)."""
    made: list[LedgerStore] = []
    counter = itertools.count()

    def factory() -> LedgerStore:
        ledger: LedgerStore
        if request.param == "memory":
            ledger = InMemoryLedger()
        else:
            ledger = SQLiteLedger(tmp_path / f"ledger-{next(counter)}.db")
        made.append(ledger)
        return ledger

    yield factory
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(make_ledger: LedgerFactory) -> LedgerStore:
    return make_ledger()
