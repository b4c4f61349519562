"""Period close: seal a billing month with a SHA-256 over its canonical entries; verify it later.

The canonical form is one JSON line per item (keys sorted, no spaces, exact decimal strings),
ordered by id: each event of the period with its rating *as of the close*, then each correction
carried into the period (see below). The hash is SHA-256 over the lines joined by ``\\n``.

Corrections after the close never rewrite a sealed period: an adjustment appended to an event of a
closed period after its ``closed_at`` is left out of that period's rating (its seal stays valid) and
is carried, as a ``correction`` line, into the period in which it was appended.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, money_str
from outlay.ledger import Adjustment, LedgerEntry, LedgerStore

from ._period import Period, parse_period
from ._store import PeriodStore, Seal, TenantSeal

__all__ = [
    "CANONICAL_FIELDS",
    "Item",
    "Verification",
    "canonical_lines",
    "canonical_sha256",
    "close_period",
    "period_items",
    "seal_items",
    "verify_period",
]


@dataclass(frozen=True, slots=True)
class Item:
    """One sealed line: an event with its rating as of a moment, or a carried correction."""

    kind: str  # "event" or "correction"
    id: str
    time: datetime
    tenant: str | None
    entry: LedgerEntry
    priced: bool
    cost: Decimal | None  # the event's cost, or a correction's delta
    price_version: str | None

    def canonical(self) -> dict[str, Any]:
        event = self.entry.event
        return {
            "kind": self.kind,
            "id": self.id,
            "event_id": event.event_id,
            "time": self.time.astimezone(UTC).isoformat(timespec="microseconds"),
            "tenant": self.tenant,
            "environment": event.environment,
            "operation": event.operation,
            "provider": event.provider,
            "model": event.model,
            "run_id": event.run_id,
            "input_tokens": event.usage.input_tokens,
            "output_tokens": event.usage.output_tokens,
            "priced": self.priced,
            "cost": None if self.cost is None else money_str(self.cost),
            "price_version": self.price_version,
            "region": event.region,
            "retention": event.retention,
        }


#: The fields of a canonical line, in the order the audit export lists them.
CANONICAL_FIELDS: Final = (
    "kind", "id", "event_id", "time", "tenant", "environment", "operation", "provider", "model",
    "run_id", "input_tokens", "output_tokens", "priced", "cost", "price_version", "region", "retention",
)  # fmt: skip


def canonical_lines(items: Iterable[Item] | Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """The canonical serialisation (of items, or of their ``canonical()`` dicts), ordered by kind
    (events first) then id."""
    rows = [item.canonical() if isinstance(item, Item) else item for item in items]
    for row in sorted(rows, key=lambda r: (r["kind"] != "event", r["id"])):
        yield json.dumps(row, sort_keys=True, separators=(",", ":")).encode()


def canonical_sha256(items: Iterable[Item] | Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 (hex) over the canonical lines joined by ``\\n``: what a seal holds."""
    return hashlib.sha256(b"\n".join(canonical_lines(items))).hexdigest()


def _digest(items: Sequence[Item]) -> str:
    return canonical_sha256(items)


def _as_of(
    entry: LedgerEntry, history: Sequence[Adjustment], cutoff: datetime | None
) -> tuple[bool, Decimal | None, str | None]:
    """The rating ``entry`` had at ``cutoff`` (``None``: now): its last adjustment made by then."""
    if cutoff is None:
        return entry.priced, entry.cost, entry.price_version
    made = [a for a in history if a.time <= cutoff]
    if made:
        return made[-1].priced, made[-1].cost, made[-1].price_version
    event = entry.event
    return event.priced, event.cost, event.price_version


def _by_event(ledger: LedgerStore) -> dict[str, list[Adjustment]]:
    grouped: dict[str, list[Adjustment]] = {}
    for adjustment in ledger.adjustments():
        grouped.setdefault(adjustment.event_id, []).append(adjustment)
    return grouped


def period_items(
    ledger: LedgerStore, store: PeriodStore, period: str | Period, *, cutoff: datetime | None = None
) -> list[Item]:
    """The items of ``period``: its events rated as of ``cutoff`` (default: its close if sealed,
    else now) and the late corrections of earlier closed periods appended within it."""
    month = period if isinstance(period, Period) else parse_period(period)
    if cutoff is None:
        seal = store.get(month.name)
        cutoff = seal.closed_at if seal is not None else None
    else:
        seal = store.get(month.name)
    # Adjustments made after *this* period closed belong to a later period, not to this rating.
    limit = cutoff if seal is None else min(seal.closed_at, cutoff or seal.closed_at)
    history = _by_event(ledger)
    items: list[Item] = []
    for entry in ledger.entries(month.start, month.end):
        event = entry.event
        priced, cost, version = _as_of(entry, history.get(event.event_id, ()), limit)
        items.append(Item("event", event.event_id, event.time, event.tenant_id, entry, priced, cost, version))
    items.extend(_carried(ledger, store, month, history, cutoff))
    return items


def _carried(
    ledger: LedgerStore,
    store: PeriodStore,
    month: Period,
    history: Mapping[str, list[Adjustment]],
    cutoff: datetime | None,
) -> Iterator[Item]:
    def within(a: Adjustment) -> bool:
        return month.start <= a.time < month.end and (cutoff is None or a.time <= cutoff)

    late = {a.event_id for adjustments in history.values() for a in adjustments if within(a)}
    if not late:
        return
    for seal in store.all():
        if seal.period >= month.name:
            break
        earlier = parse_period(seal.period)
        for entry in ledger.entries(earlier.start, earlier.end):
            if entry.event.event_id not in late:
                continue
            for adjustment in history.get(entry.event.event_id, ()):
                if within(adjustment) and adjustment.time > seal.closed_at:
                    yield Item("correction", adjustment.adjustment_id, adjustment.time, entry.event.tenant_id,
                               entry, True, adjustment.delta, adjustment.price_version)  # fmt: skip


def seal_items(period: str, items: Sequence[Item], closed_at: datetime) -> Seal:
    """The seal of ``items``: a pure function, so a verifier can recompute it from any list."""
    parts: dict[str, list[Item]] = {}
    for item in items:
        if item.tenant is not None:
            parts.setdefault(item.tenant, []).append(item)

    def summary(chosen: Sequence[Item]) -> TenantSeal:
        total: Decimal | None = None if chosen else Decimal(0)  # entries none of them priced: unknown
        for item in chosen:
            if item.cost is not None:
                total = item.cost if total is None else MONEY_CONTEXT.add(total, item.cost)
        return TenantSeal(_digest(chosen), len(chosen), total, sum(1 for i in chosen if not i.priced))

    whole = summary(items)
    tenants = {tenant: summary(chosen) for tenant, chosen in parts.items()}
    return Seal(period, whole.sha256, whole.entries, whole.total, whole.unpriced, closed_at, tenants)


def close_period(
    ledger: LedgerStore,
    period: str | Period,
    store: PeriodStore,
    *,
    now: datetime | None = None,
    closed_by: str | None = None,
) -> tuple[Seal, bool]:
    """Seal ``period`` (which must have ended). Returns the seal and whether this call created it;
    closing a closed period again returns the stored seal unchanged. ``closed_by`` names who closes
    it (the API passes its token's name), for the audit trail."""
    month = period if isinstance(period, Period) else parse_period(period)
    if now is not None and (not isinstance(now, datetime) or now.tzinfo is None):
        raise InvalidInput(f"must be a timezone-aware datetime, got {now!r}", field="now")
    moment = now or datetime.now(UTC)
    existing = store.get(month.name)
    if existing is not None:
        return existing, False
    if moment < month.end:
        raise InvalidInput(
            f"{month.name} has not ended yet; close it after {month.end.isoformat()}", field="period"
        )
    # An adjustment stamped before the cutoff may still be committing: let it land first, or the
    # seal would miss it and verify_period would then fail on an untouched ledger.
    ledger.wait_for_writes()
    seal = seal_items(month.name, period_items(ledger, store, month, cutoff=moment), moment)
    seal = replace(seal, closed_by=closed_by)
    stored = store.put(seal)
    return stored, stored == seal


@dataclass(frozen=True, slots=True)
class Verification:
    period: str
    ok: bool
    sealed_sha256: str
    actual_sha256: str
    sealed_entries: int
    actual_entries: int
    sealed_total: Decimal | None
    actual_total: Decimal | None

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "ok": self.ok,
            "sealed": {
                "sha256": self.sealed_sha256,
                "entries": self.sealed_entries,
                "total": None if self.sealed_total is None else money_str(self.sealed_total),
            },
            "actual": {
                "sha256": self.actual_sha256,
                "entries": self.actual_entries,
                "total": None if self.actual_total is None else money_str(self.actual_total),
            },
        }


def verify_period(
    ledger: LedgerStore, period: str | Period, store: PeriodStore, *, items: Sequence[Item] | None = None
) -> Verification:
    """Recompute the seal of a closed period (from the ledger, or from ``items`` a customer holds)
    and compare it with the stored one."""
    month = period if isinstance(period, Period) else parse_period(period)
    seal = store.get(month.name)
    if seal is None:
        raise InvalidInput(f"{month.name} is not closed; close it first", field="period")
    chosen = items if items is not None else period_items(ledger, store, month, cutoff=seal.closed_at)
    actual = seal_items(month.name, chosen, seal.closed_at)
    return Verification(
        month.name, actual.sha256 == seal.sha256, seal.sha256, actual.sha256,
        seal.entries, actual.entries, seal.total, actual.total,
    )  # fmt: skip
