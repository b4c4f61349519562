"""Isolation case of the budget status endpoint (merged into test_isolation.CASES)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from outlay import Outlay
from outlay.api import create_app
from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore
from outlay.keys import InMemoryKeyStore

from .conftest import ACME, ADMIN, GLOBEX_MARKERS, TOKENS, auth, event

Check = Callable[[httpx.AsyncClient], Awaitable[None]]
STATUS = "/api/v1/budgets/status"


def clean(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    for marker in GLOBEX_MARKERS:
        assert marker not in r.text.lower(), (marker, r.request.url, r.text[:300])


async def check_status(client: httpx.AsyncClient) -> None:
    # The shared app has no budgets: it says so, and still keeps tenants apart.
    bare = await client.get(STATUS, headers=auth(ACME))
    clean(bare)
    assert bare.status_code == 200 and bare.json()["configured"] is False
    assert (await client.get(STATUS, params={"tenant": "globex"}, headers=auth(ACME))).status_code == 403
    # With budgets (policies, a policy pinned to globex, a globex key) and spend on both tenants.
    policies = [
        Budget("10", "8", scope="tenant", name="monthly"),
        Budget("7", scope="tenant", key="globex", name="globex-only"),
        Budget("3", scope="feature", name="per-feature"),
        Budget("50", scope="feature", name="platform-cap", shared=True),
    ]
    store = InMemoryBudgetStore()
    engine = BudgetEngine(store, policies=policies)
    keys = InMemoryKeyStore()
    keys.create("globex", feature="support-bot", budget="9/day", name="globex-run")
    for tenant, feature in (("acme", "search"), ("globex", "support-bot")):
        engine.settle(engine.reserve({"tenant": tenant, "feature": feature}, "1"), "1")
    outlay = Outlay("memory://")
    outlay.record(event(tenant_id="acme"))  # the admin lists tenants the ledger (or a policy) knows
    app = create_app(outlay, tokens=TOKENS, budgets=policies, budget_store=engine, keys=keys)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            own = await c.get(STATUS, headers=auth(ACME))
            clean(own)
            assert {row["tenant"] for row in own.json()["rows"]} == {"acme"}
            assert [row["name"] for row in own.json()["rows"]] == ["monthly"]
            named = await c.get(STATUS, params={"tenant": "acme", "feature": "search"}, headers=auth(ACME))
            clean(named)
            # acme's own feature counter is shown; a shared one adds up every tenant's: not shown.
            rows = [(row["name"], row["spent"]) for row in named.json()["rows"]]
            assert rows == [("monthly", "1"), ("per-feature", "1")]
            assert named.json()["omitted"]["shared"] == 1
            other = await c.get(STATUS, params={"tenant": "globex"}, headers=auth(ACME))
            clean(other)
            assert other.status_code == 403
            admin = await c.get(STATUS, headers=auth(ADMIN))
            assert {row["tenant"] for row in admin.json()["rows"]} == {"acme", "globex"}
            assert "globex-only" in admin.text and "globex-run" in admin.text  # the admin sees globex's
    finally:
        outlay.close()


BUDGET_CASES: dict[tuple[str, str], Check] = {
    ("GET", STATUS): check_status,
}
