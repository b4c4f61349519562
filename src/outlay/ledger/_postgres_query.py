"""Read statements of the PostgreSQL ledger: totals from rollups or events, entries, run totals.

Every function returns ``(sql, params)`` with ``{s}`` still standing for the schema; the ledger
substitutes it. Group-by keys are checked by the caller against a fixed list before they reach
here, so only known column names are ever placed into SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from ._base import Totals
from ._postgres_schema import TOKENS

__all__ = ["EFFECTIVE", "FROM_EVENTS", "event_totals_sql", "rollup_totals_sql", "runs_sql", "to_totals"]

# The effective rating of an event: its latest adjustment (event_state) or its own.
EFFECTIVE: Final = """
    COALESCE(s.priced, e.priced) AS eff_priced,
    CASE WHEN s.event_id IS NULL THEN e.cost ELSE s.cost END AS eff_cost,
    CASE WHEN s.event_id IS NULL THEN e.price_version ELSE s.price_version END AS eff_version,
    CASE WHEN s.event_id IS NULL THEN e.unpriced_reason ELSE s.unpriced_reason END AS eff_reason,
    COALESCE(s.adjustments, 0) AS eff_adjustments
"""
FROM_EVENTS: Final = "{s}.events e LEFT JOIN {s}.event_state s ON s.event_id = e.event_id"
_DAY: Final = "to_char({}, 'YYYY-MM-DD')"
_COUNT_SUMS: Final = ", ".join(f"sum({name})::bigint" for name in TOKENS.split(", "))


def _filters(
    where: list[str],
    params: list[Any],
    prefix: str,
    *,
    environment: str | None,
    tenant: str | None,
    unattributed: bool,
) -> None:
    if environment is not None:
        where.append(f"{prefix}environment = %s")
        params.append(environment)
    if tenant is not None:
        where.append(f"{prefix}tenant = %s")
        params.append(tenant)
    if unattributed:
        where.append(f"{prefix}tenant = ''")


def rollup_totals_sql(
    keys: Sequence[str],
    grain: str,
    low: date,
    high: date,
    *,
    environment: str | None,
    tenant: str | None,
    unattributed: bool,
) -> tuple[str, list[Any]]:
    """Totals of the day (or month) rollup rows with ``low <= day (month) < high``."""
    table, column = ("rollups", "day") if grain == "day" else ("rollups_month", "month")
    where, params = [f"{column} >= %s", f"{column} < %s"], [low, high]
    _filters(where, params, "", environment=environment, tenant=tenant, unattributed=unattributed)
    columns = ", ".join(_DAY.format(column) if name == "day" else name for name in keys)
    sums = f"sum(events)::bigint, sum(unpriced_events)::bigint, sum(cost), {_COUNT_SUMS}"
    sql = f"SELECT {columns + ', ' if keys else ''}{sums} FROM {{s}}.{table} WHERE {' AND '.join(where)}"
    if keys:
        sql += " GROUP BY " + ", ".join(str(i) for i in range(1, len(keys) + 1))
    return sql, params


def event_totals_sql(
    keys: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    environment: str | None,
    tenant: str | None,
    unattributed: bool,
    unpriced_only: bool,
) -> tuple[str, list[Any]]:
    """Totals of the events with ``start <= time < end``, with their effective (adjusted) cost."""
    where, params = ["e.time >= %s", "e.time < %s"], [start, end]
    _filters(where, params, "e.", environment=environment, tenant=tenant, unattributed=unattributed)
    if unpriced_only:
        # Re-rating never unprices an event, so effective-unpriced ones are originally unpriced:
        # ``NOT e.priced`` lets PostgreSQL use the partial index.
        where.append("NOT e.priced AND NOT COALESCE(s.priced, false)")
    columns = ", ".join(
        "eff_reason" if name == "reason" else _DAY.format("day") if name == "day" else name for name in keys
    )
    sums = "count(*), count(*) FILTER (WHERE NOT eff_priced), sum(eff_cost), " + ", ".join(
        f"sum({name})::bigint" for name in TOKENS.split(", ")
    )
    inner = f"SELECT e.*, {EFFECTIVE} FROM {FROM_EVENTS} WHERE {' AND '.join(where)}"
    sql = f"SELECT {columns + ', ' if keys else ''}{sums} FROM ({inner}) x"
    if keys:
        sql += " GROUP BY " + ", ".join(str(i) for i in range(1, len(keys) + 1))
    return sql, params


def runs_sql(
    run_ids: Sequence[str], parent_run_ids: Sequence[str], root_run_id: str | None
) -> tuple[str, list[Any]] | None:
    """Runs matching any of the given ids, parents or root; ``None`` when nothing is asked."""
    where: list[str] = []
    params: list[Any] = []
    if run_ids:
        where.append("run_id = ANY(%s)")
        params.append(list(run_ids))
    if parent_run_ids:
        where.append("parent_run_id = ANY(%s)")
        params.append(list(parent_run_ids))
    if root_run_id is not None:
        where.append("root_run_id = %s")
        params.append(root_run_id)
    if not where:
        return None
    sql = (
        "SELECT run_id, parent_run_id, root_run_id, tenant_id, agent, events, unpriced_events, cost"
        f" FROM {{s}}.runs WHERE {' OR '.join(where)} ORDER BY run_id"
    )
    return sql, params


def to_totals(rows: Sequence[Sequence[Any]], width: int) -> list[Totals]:
    """Rows of ``width`` key columns then events, unpriced, cost and the five token sums."""
    out = []
    for row in rows:
        if not row[width]:  # an aggregate over no rows (no GROUP BY) still returns one row
            continue
        key = tuple(None if value in ("", None) else value for value in row[:width])
        cost: Decimal | None = row[width + 2]
        out.append(
            Totals(key, int(row[width]), int(row[width + 1]), cost, *(int(v) for v in row[width + 3 :]))
        )
    return out
