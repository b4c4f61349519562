"""Report and re-rating windows: ``[start, end)`` in UTC, from dates, datetimes or ISO strings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from outlay._errors import InvalidInput

__all__ = ["Instant", "Window", "parse_instant", "parse_window"]

Instant = date | datetime | str
# Reports plan windows in whole months and days around them, so the last month must have a next one.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def parse_instant(value: object, field: str) -> datetime:
    """``value`` as an aware UTC datetime. A date is its UTC midnight; a naive datetime is UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"not an ISO date or datetime: {value!r} (expected e.g. 2026-03-01 or 2026-03-01T12:00:00Z)",
                field=field,
            ) from None
    if isinstance(value, datetime):
        try:
            moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past datetime's range in UTC
            moment = datetime.max.replace(tzinfo=UTC)
    elif isinstance(value, date):
        moment = datetime.combine(value, time(), UTC)
    else:
        raise InvalidInput(
            f"expected a date, datetime or ISO string, got {type(value).__name__}", field=field
        )
    if not _EARLIEST <= moment <= _LATEST:
        raise InvalidInput(
            f"must be between {_EARLIEST.date()} and {_LATEST.date()}, got {moment.isoformat()}", field=field
        )
    return moment


@dataclass(frozen=True, slots=True)
class Window:
    """``start`` inclusive, ``end`` exclusive, both aware UTC datetimes."""

    start: datetime
    end: datetime

    def full_days(self) -> tuple[date, date] | None:
        """The whole UTC days ``[first, last)`` inside the window, or ``None`` if there is none."""
        first = self.start.date()
        if self.start.timetz() != time(tzinfo=UTC):
            first += timedelta(days=1)
        last = self.end.date()
        return (first, last) if first < last else None

    def partial_pieces(self) -> list[tuple[datetime, datetime]]:
        """The parts of the window outside :meth:`full_days` (at most one at each end)."""
        days = self.full_days()
        if days is None:
            return [(self.start, self.end)]
        pieces = []
        first = datetime.combine(days[0], time(), UTC)
        last = datetime.combine(days[1], time(), UTC)
        if self.start < first:
            pieces.append((self.start, first))
        if last < self.end:
            pieces.append((last, self.end))
        return pieces


def parse_window(start: object, end: object) -> Window:
    """Validate a window; ``start`` must come before ``end``."""
    window = Window(parse_instant(start, "start"), parse_instant(end, "end"))
    if window.start >= window.end:
        raise InvalidInput(
            f"must be after start ({window.start.isoformat()}), got {window.end.isoformat()}", field="end"
        )
    return window
