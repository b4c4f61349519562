"""The dashboard pages in-process: what admins and tenants see, and what they must not."""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import ADMIN, MARKERS, TOKENS_BY_TENANT, WINDOW, auth

QUOKKA = TOKENS_BY_TENANT["quokka-labs"]


async def test_finance_view_shows_every_section_with_exact_amounts(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    assert r.status_code == 200
    html = r.text
    for heading in (
        "Spend per day",
        "Spend by tenant",
        "Unattributed spend by origin",
        "Unpriced spend",
        "Spikes",
    ):
        assert f"<h2>{heading}</h2>" in html
    assert "<h2>Margins · 2026-03</h2>" in html
    assert html.count("<svg") == 2  # the daily chart and the tenant bar chart
    for tenant, (_, _, _, _, total, _, _) in MARKERS.items():
        assert f'&amp;tenant={tenant}">{tenant}</a></td>' in html  # a link to its view
        assert f'<td class="n">{total}</td>' in html  # the exact total, from the rollups
    assert "nightly-reindex" in html  # unattributed by origin
    assert "zz-model-alpha-unpriced" in html  # unpriced, listed rather than counted as zero
    assert "Top-1 share</span><b>44.7%" in html  # 9.87 of 22.08 (tenants' priced spend)
    assert "Total priced spend</span><b>$22.58</b>" in html  # the tenants' 22.08 and the unattributed 0.50


async def test_daily_chart_has_a_point_per_day_with_exact_titles(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    chart = r.text.split("<h2>Spend per day</h2>", 1)[1].split("</svg>", 1)[0]
    # Every day of March: 30 priced or zero days, and 2026-03-06, when only unpriced calls were made,
    # drawn as unknown rather than as a zero.
    assert chart.count("<circle") == 30
    assert "<title>2026-03-06: cost unknown (unpriced)</title>" in chart
    assert "<title>2026-03-05: 0</title>" in chart  # nothing at all that day: nothing was spent
    # 2026-03-02: each tenant's first third plus the unattributed job
    assert "<title>2026-03-02: 7.86</title>" in chart


@pytest.mark.parametrize("tenant", sorted(MARKERS))
async def test_tenant_sees_its_own_data_and_nothing_of_any_other(
    client: httpx.AsyncClient, tenant: str
) -> None:
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(TOKENS_BY_TENANT[tenant]))
    assert r.status_code == 200
    html = r.text
    for marker in MARKERS[tenant]:
        assert marker in html, marker
    for other, markers in MARKERS.items():
        if other == tenant:
            continue
        for marker in markers:
            assert marker not in html, f"{tenant} sees {other}'s {marker!r}"
    for admin_only in ("nightly-reindex", "Finance", "Spend by tenant", "Top-1 share"):
        assert admin_only not in html
    assert html.count("<svg") == 4  # spend per day, by feature, by agent, by model


async def test_tenant_view_lists_decisions_invoice_and_csv_link(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    html = r.text
    assert "quokka-throttled" in html
    invoice = html.split("<h2>Invoice lines · 2026-03 · production</h2>", 1)[1].split("</section>", 1)[0]
    assert "hop-summarize" in invoice and "<b>$4.44</b>" in invoice
    assert "incomplete: 1 unpriced event(s)" in invoice  # the unpriced call is not silently zero
    link = re.search(r'href="(/dashboard/export\.csv\?[^"]+what=invoice)"', invoice)
    assert link is not None
    csv = await client.get(link.group(1).replace("&amp;", "&"), headers=auth(QUOKKA))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "hop-summarize" in csv.text and "zanzibar" not in csv.text
    assert "x-outlay-sha256" in csv.headers


async def test_admin_picks_a_tenant_and_sees_that_tenant(client: httpx.AsyncClient) -> None:
    picker = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(ADMIN))
    assert picker.status_code == 200
    assert all(f">{t}</a>" in picker.text for t in MARKERS)
    r = await client.get(
        "/dashboard/tenant", params={**WINDOW, "tenant": "vortigern-inc"}, headers=auth(ADMIN)
    )
    assert r.status_code == 200
    assert "saxon-translate" in r.text and "spice-search" not in r.text


async def test_tenant_cannot_ask_for_another_tenant(client: httpx.AsyncClient) -> None:
    for path, params in (
        ("/dashboard/tenant", {"tenant": "zanzibar-co"}),
        ("/dashboard/export.csv", {"tenant": "zanzibar-co", "period": "2026-03"}),
    ):
        r = await client.get(path, params=params, headers=auth(QUOKKA))
        assert r.status_code == 403
        assert "spice-search" not in r.text and "7.77" not in r.text
    finance = await client.get("/dashboard/finance", params=WINDOW, headers=auth(QUOKKA))
    assert finance.status_code == 403
    assert "zanzibar" not in finance.text


async def test_the_index_sends_each_role_to_its_view(client: httpx.AsyncClient) -> None:
    admin = await client.get("/dashboard", headers=auth(ADMIN))
    tenant = await client.get("/dashboard/", headers=auth(QUOKKA))
    assert (admin.status_code, admin.headers["location"]) == (303, "/dashboard/finance")
    assert (tenant.status_code, tenant.headers["location"]) == (303, "/dashboard/tenant")


async def test_pages_load_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    for path, token in (("/dashboard/finance", ADMIN), ("/dashboard/tenant", QUOKKA)):
        r = await client.get(path, params=WINDOW, headers=auth(token))
        assert "<script" not in r.text and "<link" not in r.text and "@import" not in r.text
        assert not re.search(r'(src|href)="(https?:)?//', r.text)
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert len(r.content) < 40_000  # small pages: inline SVG, no assets


async def test_an_empty_window_renders_zero_not_an_error(client: httpx.AsyncClient) -> None:
    params = {"from": "2025-01-01", "to": "2025-01-08"}
    r = await client.get("/dashboard/finance", params=params, headers=auth(ADMIN))
    assert r.status_code == 200 and "nothing in this window" in r.text
    t = await client.get("/dashboard/tenant", params=params, headers=auth(QUOKKA))
    assert t.status_code == 200 and "no billable usage in this period" in t.text


async def test_hostile_names_are_escaped(client: httpx.AsyncClient, outlay: object) -> None:
    from outlay import Outlay

    from .conftest import T0, event

    assert isinstance(outlay, Outlay)
    outlay.record(event("quokka-labs", "<script>alert(1)</script>", 'a"gent', "m&m", "0.01", time=T0))
    r = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    assert "<script>alert(1)" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


async def test_unknown_totals_are_unknown_not_zero_nor_none() -> None:
    """A tenant whose every event of the month is unpriced has an invoice total of unknown (the API's
    ``null``), and unattributed spend none of which is priced is unknown too: neither "$None" nor
    "$0" (DESIGN: unknown is not zero)."""
    from datetime import timedelta

    from outlay import Outlay
    from outlay.api import create_app

    from .conftest import T0, TOKENS, event

    instance = Outlay("memory://")
    try:
        instance.record(event("quokka-labs", "hop", "pouch", "qq-priced", "1.25"))
        instance.record(event("vortigern-inc", "saxon", "castle", "vv-unpriced", None))
        instance.record(
            event(None, None, "cron", "gpt-x", None, origin="nightly", time=T0 + timedelta(hours=1))
        )
        app = create_app(instance, tokens=TOKENS)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
            tenant = await c.get(
                "/dashboard/tenant", params={**WINDOW, "tenant": "vortigern-inc"}, headers=auth(ADMIN)
            )
            finance = await c.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    finally:
        instance.close()
    assert tenant.status_code == 200 and finance.status_code == 200
    assert "$None" not in tenant.text
    assert "<p>Total <b>unknown</b>" in tenant.text
    assert "Unattributed</span><b>unknown</b>" in finance.text


def test_chart_titles_write_exact_amounts_without_an_exponent() -> None:
    from decimal import Decimal

    from outlay.dashboard import bar_chart, line_chart

    svg = line_chart([("2026-03-01", Decimal("1E-24")), ("2026-03-02", Decimal("0E-10"))], title="t")
    assert "2026-03-01: 0.000000000000000000000001</title>" in svg
    assert "2026-03-02: 0</title>" in svg
    bars = bar_chart([("acme", Decimal("3E-24"))], title="t")
    assert "acme: 0.000000000000000000000003</title>" in bars and "E-" not in bars.split("$")[0]


def test_the_summed_bar_says_it_leaves_unknown_costs_out() -> None:
    """Past the top bars the rest is summed into one: a tenant of unknown cost among them is not
    counted as $0 silently."""
    from decimal import Decimal

    from outlay.dashboard import bar_chart

    bars: list[tuple[str, Decimal | None]] = [(f"t{i}", Decimal(100 - i)) for i in range(13)]
    bars += [("ghost", None)]
    svg = bar_chart(bars, title="t", limit=12)
    assert "2 others: 88 + 1 unknown (unpriced)</title>" in svg
    assert "$88.00 + unknown</text>" in svg
    known = bar_chart(bars[: 14 - 1], title="t", limit=12)  # no unknown among the rest: a plain sum
    assert "1 others: 88</title>" in known and "+ unknown" not in known


async def test_the_finance_total_is_what_the_table_and_the_daily_chart_add_up_to(
    client: httpx.AsyncClient,
) -> None:
    # "Total priced spend" is read against the tenant table and the daily chart beneath it, both of
    # which count the unattributed job's $0.50: the total must too, to the last digit.
    from decimal import Decimal

    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth(ADMIN))
    html = r.text
    total = re.search(r"Total priced spend</span><b>\$([0-9.]+)</b>", html)
    assert total is not None
    table = html.split("<h2>Spend by tenant</h2>", 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    rows = [row for row in table.split("</tr>") if "<td" in row]
    costs = [re.findall(r'<td class="n">([^<]*)</td>', row)[1] for row in rows]
    chart = html.split("<h2>Spend per day</h2>", 1)[1].split("</svg>", 1)[0]
    days = re.findall(r"<title>\d{4}-\d\d-\d\d: ([0-9.]+)</title>", chart)
    assert sum(map(Decimal, costs)) == sum(map(Decimal, days)) == Decimal("22.58")
    assert Decimal(total.group(1)) == Decimal("22.58")
    assert "Top-1 share</span><b>44.7%" in html  # shares stay the tenants' (9.87 of their 22.08)
