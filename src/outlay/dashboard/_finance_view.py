"""The finance view (admin tokens): spend over time, by tenant, concentration, unattributed and
unpriced spend, spikes, and — when the API has the finance report and a plans file is configured —
margins per tenant."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from html import escape
from typing import Any, Final

from outlay._errors import ConfigError
from outlay._money import MONEY_CONTEXT, money_str
from outlay.api._finance import PLANS_ENV
from outlay.api._params import Query

from ._context import (
    NUMERIC,
    Context,
    cost_of,
    filters_form,
    kpis,
    nav,
    percent,
    period_of,
    series_chart,
    window_values,
)
from ._html import Link, page, table, url
from ._svg import bar_chart

__all__ = ["MARGINS_PATH", "SPIKES_PATH", "finance_view"]

MARGINS_PATH: Final = "/api/v1/finance/margins"
SPIKES_PATH: Final = "/api/v1/finance/spikes"
_MAX_SPIKES: Final = 50


def _money(text: str | None) -> str:
    return "—" if text is None else f"${text}"


def _unattributed(conc: Mapping[str, Any]) -> str:
    # No unattributed event is $0; unattributed events none of which is priced cost an unknown amount.
    if conc["unattributed_cost"] is None:
        return "unknown" if conc["unattributed_events"] else "$0"
    return _money(conc["unattributed_cost"])


def _total(conc: Mapping[str, Any]) -> str:
    # Every priced cost of the window — the tenants' and the unattributed — as the tenant table and
    # the daily chart add it up; shares and the median stay the tenants' own.
    unattributed = cost_of(conc["unattributed_cost"])
    total = Decimal(conc["total_cost"])
    return _money(money_str(total if unattributed is None else MONEY_CONTEXT.add(total, unattributed)))


def finance_view(ctx: Context, query: Query) -> str:
    values = window_values(query)
    ctx.principal.require_admin("the finance view")
    period = period_of(query, values)
    conc = ctx.api("/api/v1/concentration", values)
    share = {r["tenant"]: r["share"] for r in conc["rows"]}
    rows: list[dict[str, Any]] = []
    for r in ctx.api("/api/v1/tenants", values)["rows"]:
        name = r["tenant"]
        cell = (
            "(unattributed)"
            if name is None
            else Link(name, url("/dashboard/tenant", {**values, "tenant": name}))
        )
        rows.append({**r, "tenant": cell, "share": percent(share.get(name))})
    bars = [(str(r["tenant"]), cost_of(r["cost"])) for r in rows]
    columns = [("tenant", "Tenant"), ("events", "Events"), ("cost", "Cost (USD)"),
               ("unpriced_events", "Unpriced"), ("share", "Share")]  # fmt: skip
    unattributed = ctx.api("/api/v1/unattributed", values)["rows"]
    unpriced = ctx.api("/api/v1/unpriced", values)["rows"]
    body = [
        filters_form({**values, "period": period}, "/dashboard/finance", period=True),
        kpis(
            [
                ("Total priced spend", _total(conc)),
                ("Tenants", str(conc["tenants"])),
                ("Top-1 share", percent(conc["top_1_share"])),
                ("Top-5 share", percent(conc["top_5_share"])),
                ("Median tenant", _money(conc["median_cost"])),
                ("Unattributed", _unattributed(conc)),
                ("Unpriced events", str(conc["unpriced_events"])),
            ]
        ),
        f"<section><h2>Spend per day</h2>{series_chart(ctx, values, 'Spend per day')}</section>",
        f"<section><h2>Spend by tenant</h2>{bar_chart(bars, title='Spend by tenant')}"
        f"{table(columns, rows, numeric=NUMERIC)}</section>",
        "<section><h2>Unattributed spend by origin</h2>"
        + table(
            [
                ("origin", "Origin"),
                ("events", "Events"),
                ("cost", "Cost (USD)"),
                ("unpriced_events", "Unpriced"),
            ],
            unattributed,
            numeric=NUMERIC,
            empty="no unattributed spend in this window",
        )
        + "</section>",
        '<section><h2>Unpriced spend</h2><p class="muted">Events whose cost is unknown — not zero.</p>'
        + table(
            [
                ("provider", "Provider"),
                ("model", "Model"),
                ("reason", "Reason"),
                ("unpriced_events", "Events"),
            ],
            unpriced,
            numeric=NUMERIC,
            empty="every event in this window is priced",
        )
        + "</section>",
        _spikes(ctx, values),
        _margins(ctx, period, values.get("environment")),
    ]
    return page("Finance", "".join(body), who=ctx.principal.name, nav=nav(ctx))


def _spikes(ctx: Context, values: Mapping[str, str | None]) -> str:
    if not ctx.has(SPIKES_PATH):
        return ""
    found = ctx.api(SPIKES_PATH, values)["spikes"]
    # The biggest first, and a page-sized list: a broad incident can flag hundreds of tenant-days.
    found.sort(key=lambda spike: (-Decimal(spike["cost"]), spike["day"]))
    more = (
        f'<p class="muted">and {len(found) - _MAX_SPIKES} smaller ones (see {SPIKES_PATH}).</p>'
        if len(found) > _MAX_SPIKES
        else ""
    )
    found = found[:_MAX_SPIKES]
    columns = [("day", "Day"), ("tenant", "Tenant"), ("cost", "Cost (USD)"), ("baseline", "Median before"),
               ("unpriced_events", "Unpriced")]  # fmt: skip
    return (
        '<section><h2>Spikes</h2><p class="muted">Days a tenant spent over 3× the median of its previous '
        "14 days (and over $1).</p>"
        + table(columns, found, numeric=NUMERIC, empty="no spikes")
        + more
        + "</section>"
    )


def _margins(ctx: Context, period: str, environment: str | None) -> str:
    head = f"<section><h2>Margins · {escape(period)}</h2>"
    if not ctx.has(MARGINS_PATH):
        return (
            f'{head}<p class="muted">Not shown: this server has no margin report '
            f"(<code>{MARGINS_PATH}</code>), so there is no revenue to compare spend with.</p></section>"
        )
    try:
        answer = ctx.api(MARGINS_PATH, {"period": period, "environment": environment})
    except ConfigError as exc:
        # Margins need each tenant's revenue, which only a plans file gives: when there is none, or it
        # cannot be read, or an entry is wrong (its field named), say so and show no number — the
        # rest of the finance view does not depend on it.
        message = str(exc).removeprefix("plans: ")
        if exc.field != "plans":
            message = f"the plans file ({PLANS_ENV}) has a mistake: {message}"
        return f'{head}<p class="muted">Not shown: {escape(message)}.</p></section>'
    rows = [{**r, "margin_ratio": percent(r["margin_ratio"])} for r in answer["rows"]]
    columns = [("tenant", "Tenant"), ("plan", "Plan"), ("revenue", "Revenue (USD)"), ("cost", "Cost (USD)"),
               ("margin", "Margin (USD)"), ("margin_ratio", "Margin %"), ("bound", "Exactness"),
               ("unpriced_events", "Unpriced")]  # fmt: skip
    note = (
        '<p class="muted">Exactness: <i>at_most</i>/<i>at_least</i> — some cost is still unpriced, so the '
        "margin is a bound; <i>unknown</i> — the tenant has no plan, or no priced cost.</p>"
    )
    return head + table(columns, rows, numeric=NUMERIC, empty="no tenant has a plan") + note + "</section>"
