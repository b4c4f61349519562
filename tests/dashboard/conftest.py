"""A seeded outlay of three tenants with distinctive names, an admin token and a token per tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from outlay import Outlay
from outlay._runtime import decision_event
from outlay._usage import Usage
from outlay.api import create_app
from outlay.budgets import Decision
from outlay.events import CostEvent

D = Decimal
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WINDOW = {"from": "2026-03-01", "to": "2026-04-01"}
ADMIN = "admin-token-0123456789"
TOKENS_BY_TENANT = {
    "zanzibar-co": "zanzibar-token-0123456789",
    "quokka-labs": "quokka-token-0123456789",
    "vortigern-inc": "vortigern-token-0123456789",
}
TOKENS = [
    {"name": "finance", "token": ADMIN, "role": "admin"},
    *({"name": f"{t}-app", "token": tok, "tenant": t} for t, tok in TOKENS_BY_TENANT.items()),
]
#: Per tenant, strings (names, features, agents, models, amounts, messages) only its data holds.
MARKERS = {
    "zanzibar-co": (
        "zanzibar",
        "spice-search",
        "navigator-agent",
        "zz-model-alpha",
        "7.77",
        "2.59",
        "zanzibar-denied",
    ),
    "quokka-labs": (
        "quokka",
        "hop-summarize",
        "pouch-agent",
        "qq-model-beta",
        "4.44",
        "1.48",
        "quokka-throttled",
    ),
    "vortigern-inc": (
        "vortigern",
        "saxon-translate",
        "castle-agent",
        "vv-model-gamma",
        "9.87",
        "3.29",
        "vortigern-denied",
    ),
}


def event(
    tenant: str | None, feature: str | None, agent: str, model: str, cost: str | None, **fields: Any
) -> CostEvent:
    values: dict[str, Any] = {
        "time": T0,
        "tenant_id": tenant,
        "feature": feature,
        "agent": agent,
        "provider": "openai",
        "model": model,
        "priced": cost is not None,
        "cost": None if cost is None else D(cost),
        "price_version": None if cost is None else "v1",
        "usage": Usage(input_tokens=100, output_tokens=10),
    }
    if tenant is None:
        values["attribution"] = "unattributed"
    if cost is None:
        values["unpriced_reason"] = "no price for this model"
    values.update(fields)
    return CostEvent(**values)


def seed() -> list[CostEvent]:
    day = timedelta(days=1)
    events = []
    for i, (tenant, (_, feature, agent, model, amount, _daily, message)) in enumerate(MARKERS.items()):
        for d in range(3):  # three days of spend, the amount split over them
            part = str(D(amount) / 3)
            events.append(
                event(tenant, feature, agent, model, part, time=T0 + d * day + timedelta(minutes=i))
            )
        events.append(event(tenant, feature, agent, f"{model}-unpriced", None, time=T0 + 4 * day))
        kind = "throttled" if "throttled" in message else "denied"
        extra: dict[str, Any] = (
            {"retry_after": 1.5} if kind == "throttled" else {"limit": D("5"), "spent": D("6")}
        )
        events.append(
            decision_event(
                Decision(kind=kind, message=message, tenant=tenant, time=T0 + timedelta(hours=1 + i), **extra)
            )
        )
    events.append(event(None, None, "cron", "gpt-4o", "0.50", origin="nightly-reindex"))
    return events


@pytest.fixture
def outlay() -> Iterator[Outlay]:
    instance = Outlay("memory://")
    for e in seed():
        instance.record(e)
    yield instance
    instance.close()


@pytest.fixture
def app(outlay: Outlay) -> Starlette:
    return create_app(outlay, tokens=TOKENS)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
