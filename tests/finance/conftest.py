"""A small ledger with known costs, and helpers to make events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from outlay._usage import Usage
from outlay.events import CostEvent
from outlay.ledger import InMemoryLedger

D = Decimal
MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def event(**fields: Any) -> CostEvent:
    values: dict[str, Any] = {
        "time": MARCH,
        "tenant_id": "acme",
        "feature": "search",
        "agent": "planner",
        "provider": "openai",
        "model": "gpt-4o",
        "priced": True,
        "cost": D("0.10"),
        "price_version": "v1",
        "usage": Usage(input_tokens=1000, output_tokens=500),
        "region": "eu-west-1",
        "retention": "30d",
    }
    values.update(fields)
    if not values["priced"]:
        values["cost"] = None
        values.setdefault("unpriced_reason", "no price for this model")
    return CostEvent(**values)


@pytest.fixture
def ledger() -> Iterator[InMemoryLedger]:
    store = InMemoryLedger()
    yield store
    store.close()
