"""Query-string parsing: every parameter is checked against the endpoint's list, so a typo
(``tennant=``) is a 400 naming it rather than a silently unfiltered — and wrong — answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from outlay._errors import InvalidInput
from outlay.events import ENVIRONMENTS
from outlay.finance._period import MONTH
from outlay.ledger import GROUP_KEYS, Window, parse_instant

__all__ = [
    "FILTER_KEYS",
    "Filters",
    "Query",
    "parse_by",
    "parse_limit",
    "parse_period",
    "path_value",
]

#: Dimensions a query may be filtered on (each an exact match).
FILTER_KEYS: Final = ("tenant", "environment", "feature", "agent", "model", "provider", "operation", "origin")
_MAX_VALUE: Final = 200
_DEFAULT_DAYS: Final = 30
#: Windows are bounded so one request cannot ask for an absurd scan or overflow a date.
_EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)


def _value(name: str, raw: str) -> str:
    if not raw or len(raw) > _MAX_VALUE or not raw.isprintable():
        raise InvalidInput(
            f"must be a non-empty printable string of at most {_MAX_VALUE} characters", field=name
        )
    return raw


def path_value(name: str, raw: str) -> str:
    """An id from the path (``{tenant}``, ``{run_id}``), checked like a query value: no event can
    hold an id that is empty, over 200 characters or not printable, and a NUL must not reach a
    ledger (PostgreSQL refuses it, which is no reason for a 503)."""
    return _value(name, raw)


@dataclass(frozen=True, slots=True)
class Filters:
    """Exact-match filters; ``tenant`` and ``environment`` are pushed down to the ledger."""

    values: Mapping[str, str]

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def with_tenant(self, tenant: str | None) -> Filters:
        values = {k: v for k, v in self.values.items() if k != "tenant"}
        if tenant is not None:
            values["tenant"] = tenant
        return Filters(values)


class Query:
    """The query string of one request, read against the parameters its endpoint allows."""

    def __init__(self, params: Sequence[tuple[str, str]], allowed: Sequence[str]) -> None:
        seen: dict[str, str] = {}
        for name, value in params:
            if name not in allowed:
                raise InvalidInput(
                    f"unknown parameter; this endpoint takes {', '.join(allowed) or 'none'}", field=name
                )
            if name in seen:
                raise InvalidInput("given more than once", field=name)
            seen[name] = value
        self.values = seen

    def get(self, name: str) -> str | None:
        raw = self.values.get(name)
        return None if raw is None else _value(name, raw)

    def window(self, *, default_days: int = _DEFAULT_DAYS, all_time: bool = False) -> Window:
        """``from``/``to`` (ISO dates or datetimes, UTC); by default the last ``default_days`` days
        up to the end of today, or with ``all_time`` everything outlay can hold."""
        end_text, start_text = self.values.get("to"), self.values.get("from")
        if all_time:
            start_text = start_text or _EARLIEST.isoformat()
            end_text = end_text or _LATEST.isoformat()
        if end_text is None:
            end = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
        else:
            end = parse_instant(_value("to", end_text), "to")
        start = (
            parse_instant(_value("from", start_text), "from")
            if start_text is not None
            # (clamped: "to=2000-01-05" alone names no "from", so must not get an error about one)
            else max(end - timedelta(days=default_days), _EARLIEST)
        )
        for name, moment in (("from", start), ("to", end)):
            if not _EARLIEST <= moment <= _LATEST:
                raise InvalidInput(f"must be between {_EARLIEST.date()} and {_LATEST.date()}", field=name)
        if start >= end:
            raise InvalidInput(f"must be after from ({start.isoformat()}), got {end.isoformat()}", field="to")
        return Window(start, end)

    def filters(self) -> Filters:
        values: dict[str, str] = {}
        for name in FILTER_KEYS:
            value = self.get(name)
            if value is None:
                continue
            if name == "environment" and value not in ENVIRONMENTS:
                raise InvalidInput(
                    f"must be one of {', '.join(sorted(ENVIRONMENTS))}, got {value!r}", field=name
                )
            values[name] = value
        return Filters(values)


def parse_by(raw: str | None, *, default: Sequence[str] = ()) -> tuple[str, ...]:
    """A comma-separated list of group-by keys, each one of :data:`GROUP_KEYS`, no repeats."""
    if raw is None:
        return tuple(default)
    names = [part.strip() for part in raw.split(",")]
    for name in names:
        if name not in GROUP_KEYS:
            raise InvalidInput(
                f"unknown group-by key {name!r}; use any of {', '.join(GROUP_KEYS)}", field="by"
            )
    if len(set(names)) != len(names):
        raise InvalidInput("a key is repeated", field="by")
    return tuple(names)


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise InvalidInput(f"must be a whole number from 1 to {maximum}, got {raw!r}", field="limit")
    return int(raw)


def parse_period(raw: str | None) -> tuple[str, Window]:
    """A billing period ``YYYY-MM`` (a calendar month, UTC) and its window."""
    if raw is None:
        raise InvalidInput("is required (a month, e.g. 2026-03)", field="period")
    try:
        if not MONTH.fullmatch(raw):
            raise ValueError
        first = date(int(raw[:4]), int(raw[5:]), 1)
    except ValueError:
        raise InvalidInput(f"must be a month like 2026-03, got {raw!r}", field="period") from None
    if not _EARLIEST.date() <= first < _LATEST.date():
        raise InvalidInput(f"must be between {_EARLIEST.year} and {_LATEST.year - 1}", field="period")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    start = datetime.combine(first, datetime.min.time(), UTC)
    end = datetime.combine(following, datetime.min.time(), UTC)
    return raw, Window(start, end)
