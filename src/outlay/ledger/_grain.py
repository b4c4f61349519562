"""Serving a day range from day and month rollups with as few rows read as possible.

Totals are additive, so a range can be read as whole months plus or minus single days: 2 March to
1 April is "March minus 1 March" (two small reads) rather than 30 days of day rows. Subtraction is
exact (Decimal) and counts stay integers, so the answer is identical to summing the days.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Literal

from outlay._money import MONEY_CONTEXT

from ._base import Totals

__all__ = ["Part", "combine", "plan"]

Grain = Literal["day", "month"]
#: (sign, grain, first, end): add (+1) or subtract (-1) the rollups of ``first <= day < end``.
Part = tuple[int, Grain, date, date]


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def plan(start: date, end: date) -> list[Part]:
    """Parts whose signed sum is exactly the days ``[start, end)``."""
    parts: list[Part] = []
    month = start.replace(day=1)
    while month < end:
        following = _next_month(month)
        low, high = max(start, month), min(end, following)
        if (low, high) == (month, following):
            parts.append((1, "month", month, following))
        elif 2 * (high - low).days > (following - month).days:
            parts.append((1, "month", month, following))
            if month < low:
                parts.append((-1, "day", month, low))
            if high < following:
                parts.append((-1, "day", high, following))
        else:
            parts.append((1, "day", low, high))
        month = following
    merged: list[Part] = []
    for part in parts:  # adjacent parts of the same sign and grain become one range query
        if merged and merged[-1][:2] == part[:2] and merged[-1][3] == part[2]:
            merged[-1] = (part[0], part[1], merged[-1][2], part[3])
        else:
            merged.append(part)
    return merged


def combine(signed: Iterable[tuple[int, Totals]]) -> list[Totals]:
    """Add up signed totals per key; a group left with no priced event has ``cost=None``."""
    counts: dict[tuple[str | None, ...], list[int]] = {}
    costs: dict[tuple[str | None, ...], Decimal] = {}
    for sign, t in signed:
        row = counts.get(t.key)
        if row is None:
            row = counts[t.key] = [0] * 7
        for i, value in enumerate(
            (
                t.events,
                t.unpriced_events,
                t.input_tokens,
                t.cache_read_tokens,
                t.cache_write_tokens,
                t.output_tokens,
                t.reasoning_tokens,
            )
        ):
            row[i] += sign * value
        if t.cost is not None:
            amount = t.cost if sign > 0 else MONEY_CONTEXT.minus(t.cost)
            previous = costs.get(t.key)
            costs[t.key] = amount if previous is None else MONEY_CONTEXT.add(previous, amount)
    return [
        Totals(key, row[0], row[1], costs.get(key) if row[0] > row[1] else None, *row[2:])
        for key, row in counts.items()
        if row[0]
    ]
