"""``InMemoryLedger``: the ledger seam in a process's memory, for tests and short-lived tools."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import uuid_utils

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO
from outlay._rating import Rating
from outlay.events import CostEvent, encode_event

from ._base import (
    EVENT_GROUP_KEYS,
    Adjustment,
    LedgerEntry,
    LedgerStore,
    Rejected,
    RunTotals,
    Totals,
    WriteResult,
    check_entries_tenant,
)
from ._rows import (
    Acc,
    RollupDeltas,
    RunAcc,
    check_adjustment_time,
    check_by,
    check_events,
    check_rating,
    day_of,
    event_group_value,
    group_totals,
    merge_acc,
    merge_run,
    rollup_key,
    time_us,
    tokens_of,
    wants_adjustment,
)

__all__ = ["InMemoryLedger"]


@dataclass(slots=True)
class _Stored:
    event: CostEvent
    us: int
    key: tuple[str, ...]
    tokens: tuple[int, int, int, int, int]
    payload: bytes
    # effective rating: the event's own until an adjustment replaces it
    priced: bool
    cost: Decimal | None
    price_version: str | None
    unpriced_reason: str | None
    adjustments: int = 0


class InMemoryLedger(LedgerStore):
    """A thread-safe ledger held in dicts; same semantics as the SQLite and PostgreSQL ledgers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, _Stored] = {}
        self._groups: dict[tuple[str, ...], Acc] = {}
        self._runs: dict[str, RunAcc] = {}
        self._adjustments: list[Adjustment] = []
        self._rejects: dict[bytes, Rejected] = {}

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        check_events(events, payloads)
        with self._lock:
            fresh: dict[str, _Stored] = {}
            for index, event in enumerate(events):
                if event.event_id in self._events or event.event_id in fresh:
                    continue
                us = time_us(event.time)
                fresh[event.event_id] = _Stored(
                    event,
                    us,
                    rollup_key(event, day_of(us)),
                    tokens_of(event),
                    payloads[index] if payloads is not None else encode_event(event),
                    event.priced,
                    event.cost,
                    event.price_version,
                    event.unpriced_reason,
                )
            deltas = RollupDeltas()
            for stored in fresh.values():
                deltas.add_event(stored.event, stored.key, stored.us, stored.tokens)
            self._apply(deltas)
            self._events.update(fresh)
        return WriteResult(len(fresh), len(events) - len(fresh))

    def _apply(self, deltas: RollupDeltas) -> None:
        for key, acc in deltas.groups.items():
            merge_acc(self._groups.setdefault(key, Acc()), acc)
        for run_id, run in deltas.runs.items():
            merge_run(self._runs, run_id, run)

    def reject(self, payload: bytes, reason: str) -> None:
        digest = hashlib.sha256(payload).digest()
        with self._lock:
            self._rejects.setdefault(digest, Rejected(datetime.now(UTC), reason, bytes(payload)))

    def rejected(self, limit: int = 100) -> list[Rejected]:
        with self._lock:
            return list(reversed(self._rejects.values()))[:limit]

    def wait_for_writes(self) -> None:
        with self._lock:  # a write in progress holds it
            pass

    def append_adjustments(
        self, ratings: Sequence[tuple[str, Rating]], *, at: datetime | None = None
    ) -> list[Adjustment]:
        check_adjustment_time(at)
        with self._lock:
            moment = at or datetime.now(UTC)  # stamped under the lock (see wait_for_writes)
            for event_id, rating in ratings:
                check_rating(event_id, rating)
                if event_id not in self._events:
                    raise InvalidInput(f"no event {event_id!r} in the ledger", field="event_id")
            appended: list[Adjustment] = []
            deltas = RollupDeltas()
            for event_id, rating in ratings:
                stored = self._events[event_id]
                if not wants_adjustment(stored.priced, stored.cost, rating):
                    continue
                assert rating.cost is not None  # a priced rating has a cost
                delta = MONEY_CONTEXT.subtract(rating.cost, stored.cost or ZERO)
                appended.append(
                    Adjustment(
                        str(uuid_utils.uuid7()),
                        event_id,
                        moment,
                        rating.price_version,
                        True,
                        rating.cost,
                        stored.cost,
                        delta,
                    )
                )
                deltas.add_adjustment(
                    stored.key, stored.event.run_id, stored.us, delta, 0 if stored.priced else -1
                )
                stored.priced, stored.cost = True, rating.cost
                stored.price_version, stored.unpriced_reason = rating.price_version, None
                stored.adjustments += 1
            self._apply(deltas)
            self._adjustments.extend(appended)
        return appended

    def adjustments(self, event_id: str | None = None) -> list[Adjustment]:
        with self._lock:
            return [a for a in self._adjustments if event_id is None or a.event_id == event_id]

    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        tenant: str | None = None,
        operation_prefix: str | None = None,
    ) -> Iterator[LedgerEntry]:
        check_entries_tenant(tenant)
        low, high = time_us(start), time_us(end)
        with self._lock:
            chosen = sorted(
                (
                    s
                    for s in self._events.values()
                    if low <= s.us < high
                    and (tenant is None or s.event.tenant_id == tenant)
                    and (operation_prefix is None or s.event.operation.startswith(operation_prefix))
                ),
                key=lambda s: s.us,
            )
            snapshot = [
                LedgerEntry(s.event, s.priced, s.cost, s.price_version, s.unpriced_reason, s.adjustments)
                for s in chosen
            ]
        yield from snapshot

    def event_count(self) -> int:
        with self._lock:
            return len(self._events)

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
        keys = check_by(by)
        first, last = start.isoformat(), end.isoformat()
        with self._lock:
            rows = [
                (tuple(event_group_value(name, key, None) for name in keys), acc)
                for key, acc in self._groups.items()
                if first <= key[1] < last and _keep(key, environment, tenant, unattributed)
            ]
            return group_totals(rows)

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
        keys = check_by(by, EVENT_GROUP_KEYS)
        low, high = time_us(start), time_us(end)
        rows: list[tuple[tuple[str | None, ...], Acc]] = []
        with self._lock:
            for s in self._events.values():
                if not low <= s.us < high or not _keep(s.key, environment, tenant, unattributed):
                    continue
                if unpriced_only and s.priced:
                    continue
                acc = Acc()
                acc.add_event(s.priced, s.cost, s.tokens)
                rows.append((tuple(event_group_value(n, s.key, s.unpriced_reason) for n in keys), acc))
        return group_totals(rows)

    def runs(
        self,
        *,
        run_ids: Sequence[str] = (),
        parent_run_ids: Sequence[str] = (),
        root_run_id: str | None = None,
    ) -> list[RunTotals]:
        wanted, parents = set(run_ids), set(parent_run_ids)
        with self._lock:
            return [
                RunTotals(
                    run_id,
                    r.parent_run_id,
                    r.root_run_id,
                    r.tenant_id,
                    r.agent,
                    r.acc.events,
                    r.acc.unpriced,
                    r.acc.cost,
                )
                for run_id, r in self._runs.items()
                if run_id in wanted
                or (r.parent_run_id is not None and r.parent_run_id in parents)
                or (root_run_id is not None and r.root_run_id == root_run_id)
            ]

    def close(self) -> None:
        """Nothing to release; the data stays readable until the object is dropped."""


def _keep(key: tuple[str, ...], environment: str | None, tenant: str | None, unattributed: bool) -> bool:
    if environment is not None and key[7] != environment:
        return False
    if tenant is not None and key[0] != tenant:
        return False
    return not (unattributed and key[0])
