"""The range planner that serves day ranges from month rollups plus or minus day rollups."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from outlay.ledger._grain import plan


def _days(low: date, high: date) -> list[date]:
    return [low + timedelta(days=i) for i in range((high - low).days)]


@given(start=st.dates(date(2024, 1, 1), date(2027, 12, 31)), length=st.integers(1, 800))
def test_signed_parts_cover_each_day_exactly_once(start: date, length: int) -> None:
    end = start + timedelta(days=length)
    covered: Counter[date] = Counter()
    for sign, grain, low, high in plan(start, end):
        if grain == "month":
            assert low.day == 1
            assert high.day == 1
        for day in _days(low, high):
            covered[day] += sign
    assert +covered == Counter(_days(start, end))
    assert -covered == Counter()


def test_whole_months_are_one_read_and_near_months_subtract_days() -> None:
    assert plan(date(2026, 1, 1), date(2026, 7, 1)) == [(1, "month", date(2026, 1, 1), date(2026, 7, 1))]
    assert plan(date(2026, 3, 2), date(2026, 4, 1)) == [
        (1, "month", date(2026, 3, 1), date(2026, 4, 1)),
        (-1, "day", date(2026, 3, 1), date(2026, 3, 2)),
    ]
    assert plan(date(2026, 3, 10), date(2026, 3, 12)) == [(1, "day", date(2026, 3, 10), date(2026, 3, 12))]
