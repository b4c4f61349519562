"""The dashboard reads rollups, not raw events; stays isolated under concurrent load; and shows a
margin table only when the API has a margin report."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from outlay import Outlay
from outlay.api import ENDPOINTS
from outlay.api._auth import Principal
from outlay.api._params import Query
from outlay.dashboard._context import PAGE_PARAMS, Context
from outlay.dashboard._finance_view import MARGINS_PATH, finance_view

from .conftest import ADMIN, MARKERS, T0, TOKENS_BY_TENANT, WINDOW, auth, event


def _spy(monkeypatch: pytest.MonkeyPatch, outlay: Outlay) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    ledger = outlay.ledger
    for name in ("entries", "event_totals"):
        real = getattr(ledger, name)

        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, (args, kwargs)))
            return _real(*args, **kwargs)

        monkeypatch.setattr(ledger, name, wrapper)
    return calls


async def test_finance_charts_come_from_rollups_not_raw_events(
    client: httpx.AsyncClient, outlay: Outlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    outlay.reports()  # catch up before spying: the page itself must not read events
    calls = _spy(monkeypatch, outlay)
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    assert r.status_code == 200
    assert not [c for c in calls if c[0] == "entries"]
    # Only the unpriced table asks for event totals (it is about individual unpriced events).
    assert all(kwargs.get("unpriced_only") for name, (_, kwargs) in calls if name == "event_totals")


async def test_tenant_view_reads_raw_events_only_on_days_with_budget_decisions(
    client: httpx.AsyncClient, outlay: Outlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    outlay.reports()
    calls = _spy(monkeypatch, outlay)
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(TOKENS_BY_TENANT["quokka-labs"]))
    assert r.status_code == 200
    scans = [args for name, (args, _) in calls if name == "entries"]
    assert scans and all(end - start <= timedelta(days=1) for start, end in scans)


async def test_concurrent_views_stay_isolated_while_events_arrive(
    client: httpx.AsyncClient, outlay: Outlay
) -> None:
    stop = threading.Event()

    def writer() -> None:
        for _ in range(300):  # bounded, so the ledger stays small whatever the scheduling
            if stop.is_set():
                return
            outlay.record(
                event("quokka-labs", "hop-summarize", "pouch-agent", "qq-model-beta", "0.01", time=T0)
            )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        requests = [
            client.get("/dashboard/tenant", params=WINDOW, headers=auth(TOKENS_BY_TENANT[t]))
            for t in sorted(MARKERS)
            for _ in range(6)
        ] + [client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN)) for _ in range(4)]
        answers = await asyncio.gather(*requests)
    finally:
        stop.set()
        thread.join()
    tenants = [t for t in sorted(MARKERS) for _ in range(6)]
    for tenant, answer in zip(tenants, answers, strict=False):
        assert answer.status_code == 200
        others = [m for o, ms in MARKERS.items() if o != tenant for m in ms[:4]]
        assert not [m for m in others if m in answer.text], tenant
    assert all(a.status_code == 200 for a in answers[len(tenants) :])


PLANS = """
[tenants.zanzibar-co]
model = "flat"
monthly_fee = "20"

[tenants.vortigern-inc]
model = "per_seat"
seat_price = "2"
seats = 3
"""


def _section(html: str, heading: str) -> str:
    return html.split(f"<h2>{heading}", 1)[1].split("</section>", 1)[0]


async def test_margins_per_tenant_with_a_plans_file(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS)
    monkeypatch.setenv("OUTLAY_PLANS", str(plans))
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    assert r.status_code == 200
    margins = _section(r.text, "Margins · 2026-03")
    rows = {
        m[0]: m[1:] for m in re.findall(r"<tr><td[^>]*>([^<]+)</td>((?:<td[^>]*>.*?</td>)+)</tr>", margins)
    }
    # 20 of revenue less 7.77 of cost; 6 (3 seats x 2) less 9.87: a loss, shown as such
    assert '<td class="n">20</td><td class="n">7.77</td><td class="n">12.23</td>' in rows["zanzibar-co"][0]
    assert '<td class="n">-3.87</td>' in rows["vortigern-inc"][0]
    # no plan: revenue and margin unknown (a dash), never a guessed zero
    assert '<td class="n"><span class="muted">—</span></td>' in rows["quokka-labs"][0]
    assert "unknown" in rows["quokka-labs"][0] and '<td class="n">0</td>' not in rows["quokka-labs"][0]
    assert "at_most" in margins  # an unpriced event makes each margin an upper bound


async def test_margins_without_a_plans_file_are_explained_not_faked(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAY_PLANS", raising=False)
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    assert r.status_code == 200
    margins = _section(r.text, "Margins")
    assert "Not shown" in margins and "OUTLAY_PLANS" in margins
    assert "<table" not in margins and "$" not in margins


def test_margins_are_omitted_when_the_api_has_no_margin_report(outlay: Outlay) -> None:
    endpoints = tuple(e for e in ENDPOINTS if e.path != MARGINS_PATH)
    ctx = Context(outlay, Principal("finance", None), endpoints, threading.Lock())
    html = finance_view(ctx, Query(list(WINDOW.items()), PAGE_PARAMS["finance"]))
    margins = _section(html, "Margins")
    assert "Not shown: this server has no margin report" in margins and "<table" not in margins


async def test_finance_view_rejects_a_bad_margin_period(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/finance", params={**WINDOW, "period": "March"}, headers=auth(ADMIN))
    assert r.status_code == 400 and "<code>period</code>" in r.text


async def test_spikes_biggest_first_and_capped(client: httpx.AsyncClient, outlay: Outlay) -> None:
    for i in range(60):  # 60 more tenants, each with one $2 day out of nothing: 60 more spikes
        outlay.record(event(f"burst-{i:02d}", "f", "a", "m", "2", time=T0 + timedelta(days=10)))
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    spikes = _section(r.text, "Spikes")
    costs = [Decimal(c) for c in re.findall(r'<td class="">[^<]+</td><td class="n">([-\d.]+)</td>', spikes)]
    assert len(costs) == 50 and costs == sorted(costs, reverse=True)
    assert costs[0] == Decimal("3.29")  # vortigern's days: the biggest
    assert "and 19 smaller ones" in spikes  # 9 seeded + 60 bursts, 50 shown


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'[tenants.zanzibar-co]\nmodel = "flat"\nmonthly_fee = 20.5\n', "tenants.zanzibar-co.monthly_fee"),
        (b"\xff\xfe[tenants]\n", "not UTF-8"),
    ],
)
async def test_a_wrong_plans_file_hides_the_margins_not_the_finance_view(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, says: str
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_bytes(content)
    monkeypatch.setenv("OUTLAY_PLANS", str(plans))
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    assert r.status_code == 200, r.text[:300]
    margins = _section(r.text, "Margins")
    assert "Not shown" in margins and says in margins and "<table" not in margins
    api = await client.get("/api/v1/finance/margins", params={"period": "2026-03"}, headers=auth(ADMIN))
    assert api.status_code == 400 and says.split(".", maxsplit=1)[0] in api.text  # named there too, no 500
