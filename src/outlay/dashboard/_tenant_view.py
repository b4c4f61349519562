"""The tenant self-service view (a tenant token, or an admin choosing a tenant): budget status, usage
by feature, agent and model, spend over time, budget decisions, and a period's invoice lines with CSV
links."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from html import escape
from typing import Any, Final

from outlay.api._params import Query

from ._context import (
    NUMERIC,
    Context,
    cost_of,
    filters_form,
    kpis,
    nav,
    period_of,
    series_chart,
    window_values,
)
from ._html import page, table, url
from ._svg import BudgetBar, bar_chart, budget_chart

__all__ = ["tenant_view"]

_EXPORT: Final = "/dashboard/export.csv"
_STATUS: Final = "/api/v1/budgets/status"
_BUDGET_COLUMNS: Final = (
    ("budget", "Budget"),
    ("applies", "Applies to"),
    ("period", "Period"),
    ("limit", "Limit"),
    ("soft", "Soft limit"),
    ("spent", "Spent"),
    ("reserved", "Held"),
    ("remaining", "Left"),
    ("state", "State"),
)
_BUDGET_NUMERIC: Final = ("limit", "soft", "spent", "reserved", "remaining")


def _total(cost: str | None) -> str:
    # A total with no priced event is unknown, never "$0" (nor "$None").
    return "unknown" if cost is None else f"${cost}"


def _tenant_picker(ctx: Context, values: Mapping[str, str | None]) -> str:
    rows = [r for r in ctx.api("/api/v1/tenants", values)["rows"] if r["tenant"] is not None]
    items = "".join(
        f'<li><a href="{escape(url("/dashboard/tenant", {**values, "tenant": r["tenant"]}))}">'
        f"{escape(r['tenant'])}</a></li>"
        for r in rows
    )
    body = (
        filters_form(values, "/dashboard/tenant")
        + f"<section><h2>Choose a tenant</h2><ul>{items}</ul></section>"
    )
    return page("Tenants", body, who=ctx.principal.name, nav=nav(ctx))


def _breakdown(ctx: Context, params: Mapping[str, str | None], key: str, heading: str) -> str:
    rows = ctx.api("/api/v1/usage/breakdown", {**params, "by": key})["rows"]
    shown = [{**r, key: r[key] if r[key] is not None else "(none)"} for r in rows]
    bars = [(str(r[key]), cost_of(r["cost"])) for r in shown]
    return (
        f"<section><h2>By {heading}</h2>{bar_chart(bars, title=f'Spend by {heading}')}"
        + table(
            [
                (key, heading.capitalize()),
                ("events", "Events"),
                ("cost", "Cost (USD)"),
                ("unpriced_events", "Unpriced"),
                ("input_tokens", "Input tokens"),
                ("output_tokens", "Output tokens"),
            ],
            shown,
            numeric=NUMERIC,
        )
        + "</section>"
    )


def _budget_row(row: Mapping[str, Any]) -> dict[str, Any]:
    state = "ok"
    if row["hard_reached"]:
        state = "hard limit reached"
    elif row["soft_reached"]:
        state = "soft limit reached"
    via = f" (key {row['key_id']})" if row["key_id"] else ""
    return {
        "budget": row["name"] or "(unnamed)",
        "applies": f"{row['scope']} {row['scope_key']}{via}",
        "period": row["period"] + (f" · {row['bucket']}" if row["bucket"] else ""),
        **{k: row[k] for k in _BUDGET_NUMERIC},
        "state": state,
    }


def _budgets(ctx: Context, tenant: str) -> str:
    """The tenant's budgets now (not the page's window): a gauge and the exact counters each."""
    if not ctx.has(_STATUS):
        return ""
    answer = ctx.api(_STATUS, {"tenant": tenant})
    if not answer["configured"]:
        return '<section><h2>Budgets</h2><p class="muted">No budget policies are configured.</p></section>'
    rows = answer["rows"]
    if not rows:
        return '<section><h2>Budgets</h2><p class="muted">No budget applies to this tenant.</p></section>'
    bars = [
        BudgetBar(
            label=f"{r['name'] or r['scope'] + ' ' + r['scope_key']} ({r['period']})",
            spent=Decimal(r["spent"]),
            reserved=Decimal(r["reserved"]),
            limit=None if r["limit"] is None else Decimal(r["limit"]),
            soft=None if r["soft"] is None else Decimal(r["soft"]),
        )
        for r in rows
    ]
    return (
        "<section><h2>Budgets</h2>"
        f'<p class="muted">Now ({escape(answer["time"][:19])} UTC), as the gateway checks them: '
        "spent, then held by calls in flight; the tick is the soft limit. Run and request budgets "
        "are per run, not listed here.</p>"
        + budget_chart(bars, title="Budgets: spent and held against each limit")
        + table(_BUDGET_COLUMNS, [_budget_row(r) for r in rows], numeric=_BUDGET_NUMERIC)
        + "</section>"
    )


def tenant_view(ctx: Context, query: Query) -> str:
    values = window_values(query)
    requested = query.get("tenant")
    if ctx.principal.is_admin and requested is None:
        return _tenant_picker(ctx, values)
    tenant = ctx.principal.scope_tenant(requested)
    assert tenant is not None
    params = {**values, "tenant": tenant}
    totals = ctx.api("/api/v1/usage/totals", params)["totals"]  # also 404s an unknown tenant for an admin
    period = period_of(query, values)
    environment = values.get("environment") or "production"
    invoice = ctx.api(
        "/api/v1/tenants/{tenant}/invoice", {"period": period, "environment": environment}, tenant=tenant
    )
    decisions = ctx.api("/api/v1/budgets/decisions", {**params, "limit": "50"})
    hidden = f'<input type="hidden" name="tenant" value="{escape(tenant)}">' if ctx.principal.is_admin else ""
    csv = {"tenant": tenant, "period": period, "environment": environment}
    cost = _total(totals["cost"])
    body = [
        filters_form({**values, "period": period}, "/dashboard/tenant", extra=hidden, period=True),
        kpis(
            [
                ("Spend", cost),
                ("Events", str(totals["events"])),
                ("Unpriced events", str(totals["unpriced_events"])),
                ("Input tokens", str(totals["input_tokens"])),
                ("Output tokens", str(totals["output_tokens"])),
            ]
        ),
        _budgets(ctx, tenant),
        f"<section><h2>Spend per day</h2>{series_chart(ctx, params, 'Spend per day')}</section>",
        _breakdown(ctx, params, "feature", "feature"),
        _breakdown(ctx, params, "agent", "agent"),
        _breakdown(ctx, params, "model", "model"),
        "<section><h2>Budget decisions</h2>"
        + table(
            [
                ("time", "Time"),
                ("kind", "Decision"),
                ("message", "Message"),
                ("run_id", "Run"),
                ("model", "Model"),
            ],
            decisions["decisions"],
            empty="no budget decisions in this window",
        )
        + ('<p class="muted">Showing the first 50.</p>' if decisions["truncated"] else "")
        + "</section>",
        f"<section><h2>Invoice lines · {escape(period)} · {escape(environment)}</h2>"
        + table(
            [
                ("feature", "Feature"),
                ("operation", "Operation"),
                ("model", "Model"),
                ("events", "Events"),
                ("unpriced_events", "Unpriced"),
                ("cost", "Cost (USD)"),
            ],
            invoice["lines"],
            numeric=NUMERIC,
            empty="no billable usage in this period",
        )
        + f"<p>Total <b>{escape(_total(invoice['total_cost']))}</b>"
        + (
            ""
            if invoice["complete"]
            else f' <span class="error">incomplete: {invoice["unpriced_events"]} '
            "unpriced event(s) not in the total</span>"
        )
        + f' · <a href="{escape(url(_EXPORT, {**csv, "what": "invoice"}))}">Download CSV</a>'
        f' · <a href="{escape(url(_EXPORT, {**csv, "what": "entries"}))}">Ledger entries CSV</a>'
        "</p></section>",
    ]
    return page(f"Usage · {tenant}", "".join(body), who=ctx.principal.name, nav=nav(ctx))
