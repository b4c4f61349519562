"""What both views share: the request :class:`Context` and small rendering helpers.

Every number comes from the API's own endpoint handlers (looked up in the route table), so the
dashboard shows exactly what the API answers, with the same tenant scoping and input checks — and,
like the API, reads the ledger's rollups rather than its raw events."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Any, Final

from outlay._errors import InvalidInput
from outlay.api._auth import Principal
from outlay.api._endpoint import Call, Endpoint
from outlay.api._params import Query, parse_period
from outlay.events import ENVIRONMENTS
from outlay.ledger import parse_instant

from ._svg import line_chart

if TYPE_CHECKING:
    from outlay import Outlay

__all__ = [
    "NUMERIC",
    "PAGE_PARAMS",
    "Context",
    "cost_of",
    "filters_form",
    "kpis",
    "last_day",
    "nav",
    "percent",
    "period_of",
    "series_chart",
    "window_values",
]

#: Query parameters each page accepts; anything else is a 400 naming it, as in the API.
PAGE_PARAMS: Final = {
    "finance": ("from", "to", "environment", "period"),
    "tenant": ("from", "to", "environment", "tenant", "period"),
}
_MONEY_COLUMNS: Final = ("cost", "total_cost", "unattributed_cost", "revenue", "margin")
NUMERIC: Final = (
    "events", "unpriced_events", "input_tokens", "output_tokens", "share", "margin_ratio", "baseline",
    *_MONEY_COLUMNS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Context:
    """One dashboard request: who asks, and the API's route table to answer with."""

    outlay: Outlay
    principal: Principal
    endpoints: Sequence[Endpoint]
    catch_up_lock: threading.Lock

    def has(self, path: str) -> bool:
        return any(e.method == "GET" and e.path == path for e in self.endpoints)

    def api(self, path: str, params: Mapping[str, str | None], **path_params: str) -> Any:
        """The answer of ``GET path`` for this principal (params the endpoint lacks are dropped)."""
        endpoint = next(e for e in self.endpoints if e.method == "GET" and e.path == path)
        if endpoint.admin_only:
            self.principal.require_admin(f"GET {path}")
        items = [(k, v) for k, v in params.items() if v is not None and k in endpoint.params]
        call = Call(
            self.outlay, self.principal, Query(items, endpoint.params), path_params, b"", self.catch_up_lock
        )
        return endpoint.handler(call)


def cost_of(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def percent(share: str | None) -> str:
    return "—" if share is None else f"{Decimal(share) * 100:.1f}%"


def filters_form(
    values: Mapping[str, str | None], action: str, *, extra: str = "", period: bool = False
) -> str:
    env = values.get("environment") or ""
    options = "".join(
        f'<option value="{e}"{" selected" if e == env else ""}>{e}</option>'
        for e in ("", *sorted(ENVIRONMENTS))
    )
    period_field = (
        (
            f'<label>Period (month)<input name="period" value="{escape(values.get("period") or "")}"'
            ' placeholder="YYYY-MM" size="8"></label>'
        )
        if period
        else ""
    )
    return (
        f'<form class="filters" method="get" action="{action}">{extra}'
        f'<label>From<input type="date" name="from" value="{escape(values.get("from") or "")}"></label>'
        f'<label>To (exclusive)<input type="date" name="to" value="{escape(values.get("to") or "")}"></label>'
        f'<label>Environment<select name="environment">{options}</select></label>{period_field}'
        '<button type="submit">Show</button></form>'
    )


def window_values(query: Query) -> dict[str, str | None]:
    window = query.window()
    values: dict[str, str | None] = {
        "from": window.start.date().isoformat(),
        "to": window.end.date().isoformat(),
    }
    if window.start.time() != window.start.min.time() or window.end.time() != window.end.min.time():
        values = {"from": window.start.isoformat(), "to": window.end.isoformat()}
    values["environment"] = query.filters().get("environment")
    return values


def series_chart(ctx: Context, params: Mapping[str, str | None], title: str) -> str:
    answer = ctx.api("/api/v1/usage/timeseries", params)
    points = answer["series"][0]["points"] if answer["series"] else []
    by_day = {p["day"]: cost_of(p["cost"]) for p in points}
    # A window with no events at all is a flat zero line: nothing was spent.
    filled = [(day, by_day.get(day, Decimal(0))) for day in answer["days"]]
    return line_chart(filled, title=title)


def kpis(items: Sequence[tuple[str, str]]) -> str:
    cells = "".join(
        f'<div class="kpi"><span class="muted">{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in items
    )
    return f'<div class="kpis">{cells}</div>'


def nav(ctx: Context) -> list[tuple[str, str]]:
    if ctx.principal.is_admin:
        return [("Finance", "/dashboard/finance"), ("Tenants", "/dashboard/tenant")]
    return [("Usage", "/dashboard/tenant")]


def period_of(query: Query, values: Mapping[str, str | None]) -> str:
    """The ``period`` parameter (a month, checked like the API does), by default the month the
    window ends in."""
    period = query.get("period")
    if period is None:
        last = last_day(values)
        period = f"{last.year:04d}-{last.month:02d}"
    parse_period(period)  # a bad period is a 400 naming it before anything is read
    return period


def last_day(values: Mapping[str, str | None]) -> date:
    """The last day of the window (``to`` is exclusive)."""
    end = values.get("to")
    if end is None:
        raise InvalidInput("is required", field="to")
    return (parse_instant(end, "to") - timedelta(microseconds=1)).date()
