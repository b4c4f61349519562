"""``CostEvent``: one immutable record per billable operation — the schema of DESIGN.md."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

import uuid_utils

from outlay._errors import InvalidEvent
from outlay._frozen import slot_init
from outlay._money import amount_problem
from outlay._rating import Rating
from outlay._usage import Usage
from outlay.context._context import MAX_RUN_PATH, check_run_path

__all__ = [
    "ATTRIBUTED",
    "CALLER_PRICED",
    "ENVIRONMENTS",
    "MAX_RUN_PATH",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNATTRIBUTED",
    "CostEvent",
    "new_event_id",
]

SCHEMA_VERSION: Final = 1
ENVIRONMENTS: Final = frozenset({"production", "staging", "development", "test"})
ATTRIBUTED: Final = "attributed"
UNATTRIBUTED: Final = "unattributed"
#: ok: the operation completed; error: it failed upstream (cost only if the provider bills failures);
#: estimated: usage was not reported (client gone, stream cut) and the cost is an estimate.
STATUSES: Final = frozenset({"ok", "error", "estimated"})
#: The ``price_version`` of an event whose cost its caller gave (``record_*(cost=...)``): re-rating
#: against a catalog leaves it alone.
CALLER_PRICED: Final = "caller"

_MAX_ID = 200
#: The longest id or name an event holds (``price_version`` included).
MAX_ID: Final = _MAX_ID
# The instants every report can name — the reporting API's windows, the dashboard, billing periods
# (2000-2199) — so no event is accepted that some view could never show (a clock gone wrong).
_EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
_ID_FIELDS: Final = (
    "tenant_id", "workspace_id", "user_id", "billing_unit", "feature", "origin", "request_id", "run_id",
    "parent_run_id", "root_run_id", "agent", "run_kind", "workflow_id", "provider", "model", "price_version",
    "region", "retention", "source",
)  # fmt: skip


#: A UUID in its canonical 8-4-4-4-12 hex form (what every producer of event ids writes).
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ids_of: Final = operator.attrgetter(*_ID_FIELDS)


def new_event_id() -> str:
    """A fresh UUIDv7 (time-ordered, so ledgers index and partition well by id)."""
    return str(uuid_utils.uuid7())


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_str_map(name: str, mapping: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not mapping:
        return _EMPTY
    if not isinstance(mapping, Mapping):
        raise InvalidEvent("must be a mapping of strings", field=name)
    for key, value in mapping.items():
        if type(key) is not str or type(value) is not str:
            raise InvalidEvent(f"keys and values must be strings, got {key!r}: {value!r}", field=name)
        try:
            key.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (os.fsdecode of a non-UTF-8 name, a JSON "\\udcff"): the event's
            # JSON is UTF-8, so it would fail later as a TypeError naming nothing.
            problem = f"{key!r}: {value!r} has no UTF-8 form (a lone surrogate)"
            raise InvalidEvent(problem, field=name) from None
    # A read-only view is already immutable (CostContext and Rating hand over such views): share it.
    return mapping if type(mapping) is MappingProxyType else MappingProxyType(dict(mapping))


def _frozen_money_map(name: str, mapping: Mapping[str, Any] | None) -> Mapping[str, Decimal]:
    if not mapping:
        return _EMPTY
    if not isinstance(mapping, Mapping):
        raise InvalidEvent("must be a mapping of decimals", field=name)
    for key, value in mapping.items():
        if type(value) is not Decimal or not value.is_finite() or value < 0:
            raise InvalidEvent(f"{key}: must be a finite non-negative Decimal, got {value!r}", field=name)
    return (
        mapping
        if type(mapping) is MappingProxyType
        else MappingProxyType({str(k): v for k, v in mapping.items()})
    )


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CostEvent:
    """A billable operation, attributed and priced. Immutable; identified by ``event_id``.

    ``cost`` is exact and in ``currency``; it is ``None`` exactly when ``priced`` is false (then
    ``unpriced_reason`` says why). ``tenant_id`` is ``None`` exactly when ``attribution`` is
    ``"unattributed"``; such events keep their ``origin`` (run name, workflow, job or service).
    """

    event_id: str = field(default_factory=new_event_id)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    schema_version: int = SCHEMA_VERSION
    source: str = "outlay"
    # attribution
    tenant_id: str | None = None
    workspace_id: str | None = None
    user_id: str | None = None
    billing_unit: str | None = None
    feature: str | None = None
    environment: str = "production"
    attribution: str = ATTRIBUTED
    origin: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # run tree
    request_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    #: The run's ancestors, root first, its parent last (at most ``MAX_RUN_PATH``, the nearest kept):
    #: the ledger links runs that recorded nothing themselves into the tree through it.
    run_path: tuple[str, ...] = ()
    agent: str | None = None
    run_kind: str | None = None
    workflow_id: str | None = None
    # what happened
    operation: str = "chat"
    provider: str | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    status: str = "ok"
    latency_ms: float | None = None
    # price
    cost: Decimal | None = None
    currency: str = "USD"
    priced: bool = False
    unpriced_reason: str | None = None
    price_version: str | None = None
    unit_prices: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY)
    cost_breakdown: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY)
    # data handling
    region: str | None = None
    retention: str | None = None

    def __post_init__(self) -> None:
        self._check_ids()
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise InvalidEvent("must be a timezone-aware datetime", field="time")
        try:
            in_range = _EARLIEST <= self.time < _LATEST
        except OverflowError:  # 9999-12-31T23:00-05:00 is past datetime's range in UTC
            in_range = False
        if not in_range:
            raise InvalidEvent(
                f"must be between {_EARLIEST.date()} and {_LATEST.date()} (UTC), got {self.time.isoformat()}",
                field="time",
            )
        if self.schema_version != SCHEMA_VERSION:
            raise InvalidEvent(
                f"unknown schema version {self.schema_version!r} (this outlay reads {SCHEMA_VERSION})",
                field="schema_version",
            )
        if self.environment not in ENVIRONMENTS:
            raise InvalidEvent(
                f"must be one of {', '.join(sorted(ENVIRONMENTS))}, got {self.environment!r}",
                field="environment",
            )
        if self.status not in STATUSES:
            raise InvalidEvent(f"must be one of {', '.join(sorted(STATUSES))}", field="status")
        if self.attribution not in (ATTRIBUTED, UNATTRIBUTED):
            raise InvalidEvent(f"must be {ATTRIBUTED!r} or {UNATTRIBUTED!r}", field="attribution")
        if (self.tenant_id is None) != (self.attribution == UNATTRIBUTED):
            raise InvalidEvent("an event has a tenant_id exactly when it is attributed", field="attribution")
        if not isinstance(self.usage, Usage):
            raise InvalidEvent("must be a Usage", field="usage")
        if not isinstance(self.operation, str) or not self.operation or "\x00" in self.operation:
            # No NUL: PostgreSQL refuses one in text, and one such event in the log would stop the
            # ledger writer (and every report) at it.
            raise InvalidEvent(
                f"must be a non-empty string with no NUL, got {self.operation!r}", field="operation"
            )
        self._check_cost()
        if self.latency_ms is not None and (
            isinstance(self.latency_ms, bool)
            or not isinstance(self.latency_ms, int | float)
            or not (0 <= self.latency_ms < float("inf"))
        ):
            raise InvalidEvent(
                f"must be a finite non-negative number, got {self.latency_ms!r}", field="latency_ms"
            )
        if self.run_path:
            self._check_run_path()
        # Most events have none of these (the shared empty view): nothing to check or freeze.
        if self.labels is not _EMPTY:
            object.__setattr__(self, "labels", _frozen_str_map("labels", self.labels))
        if self.unit_prices is not _EMPTY:
            object.__setattr__(self, "unit_prices", _frozen_money_map("unit_prices", self.unit_prices))
        if self.cost_breakdown is not _EMPTY:
            breakdown = _frozen_money_map("cost_breakdown", self.cost_breakdown)
            object.__setattr__(self, "cost_breakdown", breakdown)

    def _check_ids(self) -> None:
        if type(self.event_id) is not str or _UUID.fullmatch(self.event_id) is None:
            raise InvalidEvent(f"must be a UUID string, got {self.event_id!r}", field="event_id")
        if self.event_id.lower() != self.event_id:
            # A UUID is case-insensitive: "01A2..." and "01a2..." are one event, so it is kept in
            # one (lower-case) spelling, or a replay spelled otherwise would be counted twice.
            object.__setattr__(self, "event_id", self.event_id.lower())
        values = _ids_of(self)
        for value in values:  # runs for every event: the loop that names the field only on failure
            if value is not None and (
                type(value) is not str or not value or len(value) > _MAX_ID or not value.isprintable()
            ):
                break
        else:
            return
        for name, value in zip(_ID_FIELDS, values, strict=True):
            if value is not None and (
                type(value) is not str or not value or len(value) > _MAX_ID or not value.isprintable()
            ):
                # Printable: an id with a newline or NUL could be stored but never asked for again
                # (the API and dashboard refuse such values) nor put in a header or a CSV cell.
                raise InvalidEvent(
                    f"must be a non-empty printable string of at most {_MAX_ID} characters, got {value!r}",
                    field=name,
                )

    def _check_run_path(self) -> None:
        path = check_run_path(self.run_path, self.run_id, self.parent_run_id, error=InvalidEvent)
        object.__setattr__(self, "run_path", path)

    def _check_cost(self) -> None:
        if self.priced:
            if not isinstance(self.cost, Decimal) or not self.cost.is_finite():
                raise InvalidEvent(
                    f"a priced event needs a finite Decimal cost, got {self.cost!r}", field="cost"
                )
            if self.cost < 0:
                raise InvalidEvent(f"must not be negative, got {self.cost}", field="cost")
            problem = amount_problem(self.cost)
            if problem is not None:
                raise InvalidEvent(problem, field="cost")
        else:
            if self.cost is not None:
                raise InvalidEvent("an unpriced event has no cost (unknown is not zero)", field="cost")
            if not self.unpriced_reason:
                raise InvalidEvent("an unpriced event needs a reason", field="unpriced_reason")
        reason = self.unpriced_reason
        if reason is not None and (not isinstance(reason, str) or "\x00" in reason):  # as operation
            raise InvalidEvent(
                f"must be a string with no NUL character, got {reason!r}", field="unpriced_reason"
            )
        if not isinstance(self.currency, str) or len(self.currency) != 3 or not self.currency.isupper():
            raise InvalidEvent(
                f"must be an ISO 4217 code such as 'USD', got {self.currency!r}", field="currency"
            )

    @property
    def attributed(self) -> bool:
        return self.attribution == ATTRIBUTED

    def with_rating(self, rating: Rating) -> CostEvent:
        """A copy priced by ``rating`` (same event_id: re-rating history goes through adjustments)."""
        return replace(
            self,
            cost=rating.cost,
            priced=rating.priced,
            unpriced_reason=rating.reason if not rating.priced else None,
            price_version=rating.price_version,
            unit_prices=rating.unit_prices,
            cost_breakdown=rating.breakdown,
            currency=rating.currency,
        )
