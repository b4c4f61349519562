"""Usage endpoints: totals, breakdowns, daily time series, tenants, concentration, unattributed and
unpriced spend."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay.ledger import Totals, Window

from ._endpoint import Call, Endpoint
from ._params import FILTER_KEYS, parse_by
from ._query import filtered_totals, totals_row

__all__ = ["ENDPOINTS", "window_json"]

_WINDOW: Final = ("from", "to")
_FILTERED: Final = (*_WINDOW, *FILTER_KEYS)
_MAX_SERIES_DAYS: Final = 1000


def window_json(window: Window) -> dict[str, str]:
    return {"from": window.start.isoformat(), "to": window.end.isoformat()}


def totals(call: Call) -> dict[str, Any]:
    window, filters = call.query.window(), call.filters()
    found = filtered_totals(call.reports(), (), window, filters)
    row = totals_row((), found[0]) if found else totals_row((), _EMPTY)
    return {"window": window_json(window), "filters": dict(filters.values), "totals": row}


def breakdown(call: Call) -> dict[str, Any]:
    by = parse_by(call.query.get("by"), default=("tenant",))
    if not by:
        raise InvalidInput("give one or more group-by keys", field="by")
    window, filters = call.query.window(), call.filters()
    rows = [totals_row(by, t) for t in filtered_totals(call.reports(), by, window, filters)]
    return {"window": window_json(window), "filters": dict(filters.values), "by": list(by), "rows": rows}


def timeseries(call: Call) -> dict[str, Any]:
    by = parse_by(call.query.get("by"))
    if "day" in by:
        raise InvalidInput("the series is already by day; group by other keys", field="by")
    window, filters = call.query.window(), call.filters()
    first, last = window.start.date(), (window.end - timedelta(microseconds=1)).date()
    if (last - first).days >= _MAX_SERIES_DAYS:
        raise InvalidInput(f"a series covers at most {_MAX_SERIES_DAYS} days", field="from")
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    series: dict[tuple[str | None, ...], dict[str, dict[str, Any]]] = {}
    for t in filtered_totals(call.reports(), ("day", *by), window, filters):
        point = totals_row(("day", *by), t)
        for name in by:
            del point[name]
        series.setdefault(t.key[1:], {})[str(t.key[0])] = point
    out = []
    for key, points in series.items():
        # A day with no event is a point like any other (every field; nothing spent, no tokens).
        filled = [points.get(day) or {"day": day, **_NO_EVENT} for day in days]
        out.append({**dict(zip(by, key, strict=True)), "points": filled})
    return {"window": window_json(window), "filters": dict(filters.values), "by": list(by), "days": days,
            "series": out}  # fmt: skip


def tenants(call: Call) -> dict[str, Any]:
    window, filters = call.query.window(), call.filters()
    rows = [totals_row(("tenant",), t) for t in filtered_totals(call.reports(), ("tenant",), window, filters)]
    return {"window": window_json(window), "rows": rows}


def concentration(call: Call) -> dict[str, Any]:
    window = call.query.window()
    environment = call.query.filters().get("environment")
    report = call.reports().concentration(window.start, window.end, environment=environment)
    return {"window": window_json(window), **report}


def unattributed(call: Call) -> dict[str, Any]:
    window = call.query.window()
    environment = call.query.filters().get("environment")
    rows = call.reports().unattributed(window.start, window.end, environment=environment)
    return {"window": window_json(window), "rows": rows}


def unpriced(call: Call) -> dict[str, Any]:
    window, filters = call.query.window(), call.filters()
    rows = call.reports().unpriced(
        window.start, window.end, environment=filters.get("environment"), tenant=filters.get("tenant")
    )
    return {"window": window_json(window), "filters": dict(filters.values), "rows": rows}


_EMPTY: Final = Totals((), 0, 0, Decimal(0))  # no event at all: nothing was spent
_NO_EVENT: Final = totals_row((), _EMPTY)
_TENANT_ENV: Final = (*_WINDOW, "tenant", "environment")

ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/usage/totals", totals, "Total events, cost and tokens over a window",
             _FILTERED),
    Endpoint("GET", "/api/v1/usage/breakdown", breakdown, "Totals grouped by one or more keys",
             (*_FILTERED, "by")),
    Endpoint("GET", "/api/v1/usage/timeseries", timeseries, "Totals per UTC day, one series per group",
             (*_FILTERED, "by")),
    Endpoint("GET", "/api/v1/tenants", tenants, "Spend per tenant (a tenant token sees its own row)",
             _TENANT_ENV),
    Endpoint("GET", "/api/v1/concentration", concentration, "How concentrated spend is across tenants",
             (*_WINDOW, "environment"), admin_only=True),
    Endpoint("GET", "/api/v1/unattributed", unattributed, "Spend with no tenant, by origin",
             (*_WINDOW, "environment"), admin_only=True),
    Endpoint("GET", "/api/v1/unpriced", unpriced, "Events whose cost is unknown, by provider, model, reason",
             _TENANT_ENV),
)  # fmt: skip
