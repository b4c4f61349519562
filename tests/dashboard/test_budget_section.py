"""The tenant view's Budgets section: a gauge per budget with exact counters, the tenant's own only."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay import Outlay
from outlay.api import create_app
from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore
from outlay.dashboard._svg import BudgetBar, budget_chart
from outlay.keys import InMemoryKeyStore

from .conftest import ADMIN, MARKERS, TOKENS, TOKENS_BY_TENANT, WINDOW, auth

NS = "{http://www.w3.org/2000/svg}"
QUOKKA = TOKENS_BY_TENANT["quokka-labs"]
ZANZIBAR = TOKENS_BY_TENANT["zanzibar-co"]
SPAN = 1000 - 220 - 250  # the gauge track


def section(html: str) -> str:
    return html.split("<h2>Budgets</h2>", 1)[1].split("</section>", 1)[0]


@pytest.fixture
async def client(outlay: Outlay) -> AsyncIterator[httpx.AsyncClient]:
    policies = [
        Budget("20", "15", scope="tenant", name="monthly-cap"),
        Budget("4", scope="tenant", key="zanzibar-co", period="day", name="zanzibar-daily-cap"),
        Budget("1", name="per-run"),
    ]
    engine = BudgetEngine(InMemoryBudgetStore(), policies=policies)
    keys = InMemoryKeyStore()
    keys.create("quokka-labs", budget="2/day", name="pouch-key")
    engine.settle(engine.reserve({"tenant": "quokka-labs"}, "10"), "12")  # past the soft limit
    engine.reserve({"tenant": "quokka-labs"}, "3")  # held
    engine.settle(engine.reserve({"tenant": "zanzibar-co"}, "4"), "4")  # its daily cap reached
    app = create_app(outlay, tokens=TOKENS, budgets=policies, budget_store=engine, keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
        yield c


async def test_tenant_sees_a_gauge_per_budget_with_exact_counters(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    assert r.status_code == 200
    budgets = section(r.text)
    svg = ET.fromstring(re.search(r"<svg.*?</svg>", budgets, re.S).group(0))  # type: ignore[union-attr]
    labels = [t.text for t in svg.findall(f"{NS}text") if t.get("class") == "label"]
    assert labels == ["monthly-cap (month)", "key pouch-key (day)"]
    values = [t.text for t in svg.findall(f"{NS}text") if t.get("class") == "value"]
    assert values == ["$12.00 + $3.00 held of $20.00", "$0 of $2.00"]
    # monthly-cap: spent 12 of 20 then 3 held, the soft tick at 15 (each on the gauge's own scale)
    spent = svg.find(f"{NS}rect[@class='bar']")
    assert spent is not None and Decimal(spent.get("width", "")) == Decimal(SPAN) * 12 / 20
    soft = svg.find(f"{NS}line[@class='soft']")
    assert soft is not None and Decimal(soft.get("x1", "")) == 220 + Decimal(SPAN) * 15 / 20
    # the table has the exact amounts and says which limit is reached
    assert '<td class="n">12</td>' in budgets and '<td class="n">3</td>' in budgets
    assert "soft limit reached" in budgets and "(key key_" in budgets
    assert "Run and request budgets" in budgets  # per-run ones are said to be elsewhere
    assert r.text.count("<svg") == 5  # the gauge chart on top of the four usage charts


async def test_no_other_tenants_budget_appears_on_a_tenants_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    for other in ("zanzibar-co", "vortigern-inc"):
        for marker in MARKERS[other]:
            assert marker not in r.text, marker
    assert "zanzibar-daily-cap" not in r.text
    mine = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(ZANZIBAR))
    budgets = section(mine.text)
    assert "zanzibar-daily-cap" in budgets and "pouch-key" not in mine.text
    assert "hard limit reached" in budgets
    assert '<rect fill="#dc2626"' in budgets  # the reached gauge is drawn red


async def test_admin_sees_the_budgets_of_the_tenant_it_picks(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/tenant", params={**WINDOW, "tenant": "zanzibar-co"}, headers=auth(ADMIN))
    assert r.status_code == 200
    assert "zanzibar-daily-cap" in section(r.text) and "pouch-key" not in r.text


async def test_without_budgets_the_section_says_so_and_draws_nothing(outlay: Outlay) -> None:
    app = create_app(outlay, tokens=TOKENS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
        r = await c.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    assert "No budget policies are configured." in section(r.text)
    assert r.text.count("<svg") == 4


amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(amounts, amounts, st.none() | amounts, st.none() | amounts), max_size=20))
def test_budget_gauges_are_valid_svg_and_stay_on_their_track(
    values: list[tuple[Decimal, Decimal, Decimal | None, Decimal | None]],
) -> None:
    bars = [BudgetBar(f"<b{i}&>", *v) for i, v in enumerate(values)]
    svg = ET.fromstring(budget_chart(bars, title="<&>"))
    for rect in svg.findall(f"{NS}rect"):
        x, width = Decimal(rect.get("x", "")), Decimal(rect.get("width", ""))
        assert x >= 220 and width >= 0 and x + width <= 220 + SPAN + Decimal("0.1")
    labels = [t for t in svg.findall(f"{NS}text") if t.get("class") == "label"]
    assert len(labels) == len(bars)
