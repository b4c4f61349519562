"""A seeded outlay of several tenants, tokens for an admin and two tenants, and an in-process client."""

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
from outlay.events import CostEvent, new_event_id, to_cloudevent

D = Decimal
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WINDOW = {"from": "2026-03-01", "to": "2026-04-01"}
ADMIN = "admin-token-0123456789"
ACME = "acme-token-0123456789"
GLOBEX = "globex-token-0123456789"
TOKENS = [
    {"name": "finance", "token": ADMIN, "role": "admin"},
    {"name": "acme-app", "token": ACME, "tenant": "acme"},
    {"name": "globex-app", "token": GLOBEX, "tenant": "globex"},
]
#: Strings that only globex's data contains: a tenant token's answers must never include them.
GLOBEX_MARKERS = ("globex", "support-bot", "claude-secret", "globex-run")


def event(**fields: Any) -> CostEvent:
    values: dict[str, Any] = {
        "time": T0,
        "tenant_id": "acme",
        "feature": "search",
        "agent": "planner",
        "provider": "openai",
        "model": "gpt-4o",
        "priced": True,
        "cost": D("0.10"),
        "price_version": "v1",
        "usage": Usage(input_tokens=100, output_tokens=10),
    }
    values.update(fields)
    if values["tenant_id"] is None:
        values.setdefault("attribution", "unattributed")
    if not values["priced"]:
        values["cost"] = None
        values.setdefault("unpriced_reason", "no price for this model")
    return CostEvent(**values)


def seed_events() -> list[CostEvent]:
    day = timedelta(days=1)
    return [
        # acme, production: 3 x 0.10 search chats on 3 days, an embedding, an unpriced call
        event(time=T0, run_id="acme-run", root_run_id="acme-run"),
        event(time=T0 + day, run_id="acme-run-1", parent_run_id="acme-run", root_run_id="acme-run"),
        event(time=T0 + 2 * day),
        event(time=T0, feature="index", model="text-embedding-3-small", operation="embedding",
              cost=D("0.000000000000000001")),
        event(time=T0, model="mystery-model", priced=False),
        # acme, staging: not on the production invoice
        event(time=T0, environment="staging", cost=D("5")),
        # globex: its own feature, model and runs, one of them hanging under acme's run tree
        event(time=T0, tenant_id="globex", feature="support-bot", model="claude-secret", provider="anthropic",
              cost=D("1.00"), run_id="globex-run", root_run_id="globex-run"),
        event(time=T0 + day, tenant_id="globex", feature="support-bot", model="claude-secret",
              provider="anthropic", cost=D("1.00"), run_id="globex-run-in-acme", parent_run_id="acme-run",
              root_run_id="acme-run"),
        event(time=T0, tenant_id="globex", feature="support-bot", model="claude-secret-unpriced",
              provider="anthropic", priced=False),
        # unattributed spend of a nightly job
        event(time=T0, tenant_id=None, origin="nightly-job", feature=None, cost=D("0.50")),
    ]  # fmt: skip


def seed_decisions() -> list[CostEvent]:
    return [
        decision_event(Decision(kind="denied", message="acme is over its monthly budget", tenant="acme",
                                time=T0 + timedelta(hours=1), limit=D("10"), spent=D("10.5"))),
        decision_event(Decision(kind="throttled", message="globex is throttled", tenant="globex",
                                time=T0 + timedelta(hours=2), retry_after=1.5)),
    ]  # fmt: skip


def cloud(**fields: Any) -> dict[str, Any]:
    """A CloudEvents dict of a fresh event (acme unless told otherwise)."""
    fields.setdefault("event_id", new_event_id())
    return to_cloudevent(event(**fields))


@pytest.fixture
def outlay() -> Iterator[Outlay]:
    instance = Outlay("memory://")
    for e in [*seed_events(), *seed_decisions()]:
        instance.record(e)
    yield instance
    instance.close()


@pytest.fixture
def app(outlay: Outlay) -> Starlette:
    return create_app(outlay, tokens=TOKENS)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
