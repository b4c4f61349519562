"""The ledger seam: an append-only, idempotent store of cost events with rollups maintained on write.

Reports depend on :class:`LedgerStore` only, so every implementation (in-memory, SQLite, PostgreSQL)
serves the same numbers. The contract, checked by ``tests/ledger/conformance.py``:

- ``write`` inserts events idempotently on ``event_id`` and updates the rollups for the inserted
  ones only, in one transaction: a duplicate or a replay changes no total.
- Money is exact: costs are summed as ``Decimal`` under ``MONEY_CONTEXT`` (never floats, never a
  fixed integer unit, which could not hold 18-decimal prices). An unpriced event has no cost and is
  counted in ``unpriced_events``; a group with no priced event has ``cost=None``, never ``0``.
- Events are never updated. Re-rating appends :class:`Adjustment` entries; the rollups and the
  *effective* state of an event (its latest rating) include them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Final

from outlay._errors import InvalidInput
from outlay._rating import Rating
from outlay.events import CostEvent

__all__ = [
    "EVENT_GROUP_KEYS",
    "GROUP_KEYS",
    "SEVERAL_TENANTS",
    "Adjustment",
    "LedgerEntry",
    "LedgerStore",
    "Rejected",
    "RunTotals",
    "Totals",
    "WriteResult",
    "check_entries_tenant",
    "prefix_filter",
]

#: Keys the rollups are grouped by (``origin`` is set only for unattributed events).
GROUP_KEYS: Final = (
    "tenant",
    "day",
    "feature",
    "agent",
    "model",
    "provider",
    "operation",
    "environment",
    "origin",
)
#: Keys :meth:`LedgerStore.event_totals` accepts: the rollup keys plus the unpriced reason.
EVENT_GROUP_KEYS: Final = (*GROUP_KEYS, "reason")
_MAX_CODE_POINT: Final = chr(0x10FFFF)


def check_entries_tenant(tenant: object) -> None:
    """``entries``' ``tenant``: ``None`` (everyone) or a tenant id. An empty one is refused: the
    SQL stores keep an unattributed event's tenant as ``''``, so it read the unattributed events
    there and nothing in memory."""
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise InvalidInput(f"expected a tenant id or None, got {tenant!r}", field="tenant")


def prefix_filter(column: str, prefix: str, mark: str) -> tuple[str, tuple[str, ...]]:
    """An SQL condition (with ``mark`` as the placeholder) and its parameters keeping the rows whose
    ``column`` starts with ``prefix``: the range ``low <= column < high``.

    In code-point order, which is UTF-8 byte order: SQLite's ``BINARY`` and PostgreSQL's ``"C"``
    collation. So a prefix filter is an index-friendly range, and ``%`` or ``_`` in the prefix are
    plain characters (as they would not be in an unescaped ``LIKE``). There is no upper bound when
    no string bounds the range (a prefix of U+10FFFF characters only).
    """
    stem = prefix.rstrip(_MAX_CODE_POINT)
    if not stem:
        return f"{column} >= {mark}", (prefix,)
    point = ord(stem[-1]) + 1
    if 0xD800 <= point <= 0xDFFF:
        point = 0xE000  # surrogates cannot be stored (nor bound as UTF-8): skip to the next code point
    return f"{column} >= {mark} AND {column} < {mark}", (prefix, stem[:-1] + chr(point))


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: events newly inserted, and events ignored because their id was known."""

    inserted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Totals of one group. ``key`` holds the group's values in the order of the ``by`` keys.

    ``cost`` is the exact sum of the priced events' (effective) costs, ``None`` when no event of the
    group is priced: an unknown cost is reported as unknown, not as zero.
    """

    key: tuple[str | None, ...]
    events: int
    unpriced_events: int
    cost: Decimal | None
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def priced_events(self) -> int:
        return self.events - self.unpriced_events


#: The ``RunTotals.tenant_id`` of a run whose events came from several tenants (or from a tenant and
#: none): no tenant id is empty, so it cannot be mistaken for one.
SEVERAL_TENANTS: Final = ""


@dataclass(frozen=True, slots=True)
class RunTotals:
    """The events a run recorded itself (not its children's); parents are linked by ``parent_run_id``.

    ``tenant_id`` is :data:`SEVERAL_TENANTS` (``""``, never a tenant id) when the run's events came
    from more than one tenant (a batch job over many, or a run id two tenants both used): its
    totals then mix tenants and belong to none of them."""

    run_id: str
    parent_run_id: str | None
    root_run_id: str | None
    tenant_id: str | None
    agent: str | None
    events: int
    unpriced_events: int
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class Adjustment:
    """An appended correction of one event's rating (the event row itself is never changed).

    ``delta`` is the change of the effective cost (an unpriced event that becomes priced has a delta
    equal to its new cost); ``previous_cost`` is ``None`` when the event was unpriced before.
    """

    adjustment_id: str
    event_id: str
    time: datetime
    price_version: str
    priced: bool
    cost: Decimal | None
    previous_cost: Decimal | None
    delta: Decimal
    unpriced_reason: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """An event as recorded, with its *effective* rating (the latest adjustment, if any)."""

    event: CostEvent
    priced: bool
    cost: Decimal | None
    price_version: str | None
    unpriced_reason: str | None
    adjustments: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload the writer could not decode or accept, kept with the reason for inspection."""

    time: datetime
    reason: str
    payload: bytes


class LedgerStore(ABC):
    """Interface of every ledger implementation."""

    @abstractmethod
    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        """Insert ``events`` idempotently on ``event_id`` and update rollups, in one transaction.

        ``payloads`` are the events' encoded (CloudEvents JSON) forms when the caller already has
        them (the log writer does), saving a re-encode; they are kept for audit and re-rating.
        Raises ``InvalidInput`` (nothing written) for an event the ledger cannot hold, such as a
        non-USD cost.
        """

    @abstractmethod
    def reject(self, payload: bytes, reason: str) -> None:
        """Record a payload that was refused; recording the same payload again is a no-op."""

    @abstractmethod
    def rejected(self, limit: int = 100) -> list[Rejected]:
        """The most recent rejected payloads, newest first."""

    @abstractmethod
    def append_adjustments(
        self, ratings: Sequence[tuple[str, Rating]], *, at: datetime | None = None
    ) -> list[Adjustment]:
        """Re-rate events: append an adjustment for each ``(event_id, rating)`` that changes the cost.

        In one transaction, each rating is compared with the event's *current* effective cost: an
        equal cost appends nothing (so re-running with the same prices is a no-op, even when two
        runs race), and an unpriced rating never replaces a known cost. Unknown event ids raise
        ``InvalidInput``. Returns the adjustments appended.
        """

    @abstractmethod
    def adjustments(self, event_id: str | None = None) -> list[Adjustment]:
        """Adjustments in the order they were appended, all or those of one event."""

    @abstractmethod
    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        tenant: str | None = None,
        operation_prefix: str | None = None,
    ) -> Iterator[LedgerEntry]:
        """Events with ``start <= time < end`` with their effective rating, in time order; only
        ``tenant``'s when given (read through an index, not filtered after reading everyone's).

        ``operation_prefix`` keeps only events whose ``operation`` starts with it, compared
        character by character (no wildcards); filtered by the store, so events left out are never
        decoded. An empty prefix keeps every event, as ``str.startswith("")`` does.
        """

    @abstractmethod
    def event_count(self) -> int:
        """Number of distinct events recorded."""

    @abstractmethod
    def rollup_totals(
        self,
        by: Sequence[str],
        start: date,
        end: date,
        *,
        environment: str | None = None,
        tenant: str | None = None,
        unattributed: bool = False,
    ) -> list[Totals]:
        """Totals grouped by ``by`` (a subset of :data:`GROUP_KEYS`) over UTC days ``start <= day < end``.

        Served from the rollups (cost includes adjustments). ``tenant`` restricts to one tenant,
        ``unattributed`` to events without one.
        """

    @abstractmethod
    def event_totals(
        self,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        environment: str | None = None,
        tenant: str | None = None,
        unattributed: bool = False,
        unpriced_only: bool = False,
    ) -> list[Totals]:
        """Like :meth:`rollup_totals` but from the events themselves, for any instants ``[start, end)``.

        Used for partial days at the edges of a window and for the unpriced report
        (``unpriced_only``, grouped by ``reason``).
        """

    @abstractmethod
    def runs(
        self,
        *,
        run_ids: Sequence[str] = (),
        parent_run_ids: Sequence[str] = (),
        root_run_id: str | None = None,
    ) -> list[RunTotals]:
        """Per-run totals of the runs matching any of the given ids, parents or root."""

    def wait_for_writes(self) -> None:  # noqa: B027  # optional: most stores need nothing
        """Return once every write transaction that began before this call has ended. A period
        close calls it after taking its cutoff: an adjustment stamped before the cutoff (stores
        stamp adjustments inside their write transaction) is then committed, and sealed, before
        the close reads. The default does nothing (a store whose reads cannot miss such writes)."""

    def maintain(self) -> bool:
        """Do a bounded step of background upkeep (the SQLite ledger rolls events up by hour, so
        that windows given with times of day read whole hours from rollups, and indexes them by
        tenant, so that a tenant's reads skip the others' events); ``True`` if there is
        more to do. The writer calls it when idle. Totals are exact whether or not it ran."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Release connections; the ledger is not used afterwards."""

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
