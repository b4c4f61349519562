"""Filtered, grouped totals on top of :class:`outlay.reporting.Reports`.

The ledger filters on tenant and environment itself; any other filter (feature, model, ...) is
applied by grouping on that key too and keeping the matching groups, then adding the groups back
up by the requested keys. Totals are additive and summed exactly, so this equals filtering the
events, while still reading the rollups (fast at any ledger size) and never building SQL from input.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Final

from outlay._money import MONEY_CONTEXT, ZERO, money_str
from outlay.ledger import LedgerStore, Totals, Window
from outlay.reporting import TOKEN_COLUMNS, Reports

from ._params import Filters

__all__ = ["add_cost", "cost_text", "filtered_totals", "tenant_known", "totals_row"]

_PUSHED_DOWN: Final = ("tenant", "environment")
_ANY_KEY: Final = ("environment",)  # a key every event has, for totals without a group


def add_cost(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """Sum of two group costs where ``None`` means "no priced event" (not zero)."""
    if a is None:
        return b
    return a if b is None else MONEY_CONTEXT.add(a, b)


def cost_text(cost: Decimal | None) -> str | None:
    return None if cost is None else money_str(cost)


def _project(totals: Sequence[Totals], positions: Sequence[int]) -> list[Totals]:
    merged: dict[tuple[str | None, ...], list[Any]] = {}
    for t in totals:
        key = tuple(t.key[i] for i in positions)
        acc = merged.get(key)
        values = [t.events, t.unpriced_events, t.cost, *(getattr(t, n) for n in TOKEN_COLUMNS)]
        if acc is None:
            merged[key] = values
            continue
        acc[0] += values[0]
        acc[1] += values[1]
        acc[2] = add_cost(acc[2], values[2])
        for i in range(3, len(acc)):
            acc[i] += values[i]
    return [Totals(key, *acc) for key, acc in merged.items()]


def _order(t: Totals) -> tuple[bool, Decimal, tuple[str, ...]]:
    return (t.cost is None, -(t.cost or ZERO), tuple(v or "" for v in t.key))


def filtered_totals(
    reports: Reports,
    by: Sequence[str],
    window: Window,
    filters: Filters,
    *,
    unattributed: bool = False,
) -> list[Totals]:
    """Totals over ``window`` grouped by ``by`` (possibly empty: one overall row, if any event),
    restricted by ``filters``; most expensive first."""
    extra = [(name, value) for name, value in filters.values.items() if name not in _PUSHED_DOWN]
    keys = list(by) + [name for name, _ in extra if name not in by]
    grouped = reports.totals(
        keys or _ANY_KEY,
        window.start,
        window.end,
        environment=filters.get("environment"),
        tenant=filters.get("tenant"),
        unattributed=unattributed,
    )
    if not keys:
        return _project(grouped, ())
    position = {name: i for i, name in enumerate(keys)}
    kept = [t for t in grouped if all(t.key[position[name]] == value for name, value in extra)]
    if len(keys) == len(by):
        return kept
    return sorted(_project(kept, [position[name] for name in by]), key=_order)


def totals_row(by: Sequence[str], totals: Totals) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(by, totals.key, strict=True))
    row["events"] = totals.events
    row["cost"] = cost_text(totals.cost)
    row["unpriced_events"] = totals.unpriced_events
    for name in TOKEN_COLUMNS:
        row[name] = getattr(totals, name)
    return row


def tenant_known(ledger: LedgerStore, tenant: str) -> bool:
    """Whether ``tenant`` has recorded anything at all (read from the month rollups)."""
    return bool(ledger.rollup_totals(("tenant",), date(2000, 1, 1), date(2200, 1, 1), tenant=tenant))
