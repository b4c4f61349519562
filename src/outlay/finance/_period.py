"""Billing periods: calendar months in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from outlay._errors import InvalidInput

__all__ = ["MONTH", "Period", "parse_period"]

# ASCII digits only: ``int()`` also takes full-width digits, signs and spaces ("２０２６-０３", "2026-+3").
MONTH: Final = re.compile(r"[0-9]{4}-[0-9]{2}")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """One billing month: ``[start, end)`` in UTC."""

    name: str
    start: datetime
    end: datetime

    def next(self) -> Period:
        return parse_period(self.end.strftime("%Y-%m"))

    def previous(self) -> Period:
        year, month = self.start.year, self.start.month - 1
        return parse_period(f"{year - (month == 0):04d}-{month or 12:02d}")


def parse_period(raw: object, *, field: str = "period") -> Period:
    """``YYYY-MM`` (years 2000..2199) as a :class:`Period`; anything else is ``InvalidInput``."""
    if not isinstance(raw, str) or not MONTH.fullmatch(raw):
        raise InvalidInput(f"must be a month like 2026-03, got {raw!r}", field=field)
    year, month = int(raw[:4]), int(raw[5:])
    if not 2000 <= year <= 2199 or not 1 <= month <= 12:
        raise InvalidInput(f"must be a month between 2000-01 and 2199-12, got {raw!r}", field=field)
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    return Period(raw, start, datetime(following.year, following.month, 1, tzinfo=UTC))
