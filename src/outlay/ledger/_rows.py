"""Pieces every ledger implementation shares: rollup keys, per-batch pre-aggregation, re-rating rules.

Keeping them here means the in-memory, SQLite and PostgreSQL ledgers cannot disagree on what a
rollup key is or on when a re-rating appends an adjustment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, amount_problem
from outlay._rating import Rating
from outlay.events import CostEvent

from ._base import GROUP_KEYS, SEVERAL_TENANTS, Totals

__all__ = [
    "CURRENCY",
    "US_PER_HOUR",
    "Acc",
    "RollupDeltas",
    "RunAcc",
    "add_cost",
    "check_adjustment_time",
    "check_by",
    "check_events",
    "check_rating",
    "day_of",
    "event_group_value",
    "group_totals",
    "hour_of",
    "merge_acc",
    "merge_run",
    "rollup_key",
    "time_us",
    "tokens_of",
    "wants_adjustment",
]

#: The ledger sums one currency; an event in another would silently corrupt every total.
CURRENCY: Final = "USD"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_US_PER_DAY: Final = 86_400_000_000
US_PER_HOUR: Final = 3_600_000_000
_ADD: Final = MONEY_CONTEXT.add


def time_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact, timezone-aware input)."""
    return (moment - _EPOCH) // _MICROSECOND


@lru_cache(maxsize=4096)
def _day_text(day_number: int) -> str:
    return date.fromordinal(_EPOCH_ORDINAL + day_number).isoformat()


def day_of(us: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of an instant given in epoch microseconds."""
    return _day_text(us // _US_PER_DAY)


@lru_cache(maxsize=8192)
def _hour_text(hour_number: int) -> str:
    return f"{_day_text(hour_number // 24)}T{hour_number % 24:02d}"


def hour_of(us: int) -> str:
    """The UTC hour (``YYYY-MM-DDTHH``) of an instant given in epoch microseconds: its first 10
    characters are its day, its first 7 its month."""
    return _hour_text(us // US_PER_HOUR)


def rollup_key(event: CostEvent, day: str) -> tuple[str, ...]:
    """The rollup key of ``event`` in :data:`GROUP_KEYS` order; absent values are ``""``.

    ``origin`` is part of the key only for unattributed events: that is where it matters (which job
    or service spent without a tenant), and it keeps attributed rollups from multiplying.
    """
    return (
        event.tenant_id or "",
        day,
        event.feature or "",
        event.agent or "",
        event.model or "",
        event.provider or "",
        event.operation,
        event.environment,
        (event.origin or "") if event.tenant_id is None else "",
    )


def tokens_of(event: CostEvent) -> tuple[int, int, int, int, int]:
    """Token totals kept in rollups: input, cache read, cache write, output, reasoning."""
    usage = event.usage
    return (
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
    )


def add_cost(total: Decimal | None, amount: Decimal | None) -> Decimal | None:
    """Exact sum where ``None`` means "nothing priced yet" (so ``None + None`` stays ``None``)."""
    if amount is None:
        return total
    if total is None:
        return amount
    return MONEY_CONTEXT.add(total, amount)


def check_events(events: Sequence[CostEvent], payloads: Sequence[bytes] | None) -> None:
    """Refuse, before anything is written, a batch the ledger could not total correctly."""
    if payloads is not None and len(payloads) != len(events):
        raise InvalidInput(f"got {len(payloads)} payloads for {len(events)} events", field="payloads")
    for index, event in enumerate(events):
        if not isinstance(event, CostEvent):
            raise InvalidInput(f"expected a CostEvent, got {type(event).__name__}", field=f"events[{index}]")
        if event.currency != CURRENCY:
            raise InvalidInput(
                f"the ledger totals {CURRENCY} only; event {event.event_id} is in {event.currency}",
                field=f"events[{index}].currency",
            )


def check_adjustment_time(at: object) -> None:
    """``at`` of ``append_adjustments``/``rerate``: ``None`` (now) or an aware datetime."""
    if at is None:
        return
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput(f"must be a timezone-aware datetime, got {at!r}", field="at")


def check_rating(event_id: str, rating: Rating) -> None:
    if not isinstance(rating, Rating):
        raise InvalidInput(f"expected a Rating, got {type(rating).__name__}", field=f"ratings[{event_id}]")
    if rating.currency != CURRENCY:
        raise InvalidInput(
            f"the ledger totals {CURRENCY} only; rating of {event_id} is in {rating.currency}",
            field="rating.currency",
        )
    if rating.cost is not None:
        problem = amount_problem(rating.cost)
        if problem is not None:
            raise InvalidInput(f"rating of {event_id}: {problem}", field="rating.cost")


def wants_adjustment(priced: bool, cost: Decimal | None, rating: Rating) -> bool:
    """Whether ``rating`` changes the effective cost of an event now at (``priced``, ``cost``).

    A new price version with the same cost changes nothing a report shows, so it appends nothing;
    an unpriced rating never erases a known cost (unknown is not zero, and not "forget" either).
    """
    if not rating.priced:
        return False
    return not (priced and cost == rating.cost)


def check_by(by: Sequence[str], allowed: Sequence[str] = GROUP_KEYS) -> tuple[str, ...]:
    keys = tuple(by)
    for name in keys:
        if name not in allowed:
            raise InvalidInput(f"unknown group-by key {name!r}; choose from {', '.join(allowed)}", field="by")
    if len(set(keys)) != len(keys):
        raise InvalidInput(f"repeated group-by key in {', '.join(keys)}", field="by")
    return keys


@dataclass(slots=True)
class Acc:
    """Mutable totals of one group while a batch (or a query) is being added up."""

    events: int = 0
    unpriced: int = 0
    cost: Decimal | None = None
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])

    def add_event(self, priced: bool, cost: Decimal | None, tokens: Sequence[int]) -> None:
        self.events += 1
        if priced:
            self.cost = add_cost(self.cost, cost)
        else:
            self.unpriced += 1
        own = self.tokens
        for i in range(5):
            own[i] += tokens[i]

    def add_adjustment(self, delta: Decimal, unpriced_delta: int) -> None:
        # Pricing a formerly unpriced event turns a ``None`` group cost into its new cost.
        self.cost = add_cost(self.cost, delta)
        self.unpriced += unpriced_delta


@dataclass(slots=True)
class RunAcc:
    """Totals of one run within a batch, with the run-tree links of its first event."""

    parent_run_id: str | None
    root_run_id: str | None
    tenant_id: str | None
    agent: str | None
    first_us: int
    last_us: int
    acc: Acc = field(default_factory=Acc)


class RollupDeltas:
    """Pre-aggregates one transaction's changes per rollup key and per run.

    Writing 5,000 events then touches one rollup row per distinct key instead of 5,000 times.
    """

    __slots__ = ("groups", "runs")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], Acc] = {}
        self.runs: dict[str, RunAcc] = {}

    def add_event(self, event: CostEvent, key: tuple[str, ...], us: int, tokens: Sequence[int]) -> None:
        # Inlined (no Acc.add_event calls): this runs once per ingested event, on the hot path.
        # A group's or run's first event makes its totals outright: in a batch of events spread
        # over many days most groups get one or two events, so this is the common case there.
        cost = event.cost  # None exactly when the event is unpriced (a CostEvent invariant)
        unpriced = 1 if cost is None else 0
        acc = self.groups.get(key)
        if acc is None:
            self.groups[key] = Acc(1, unpriced, cost, list(tokens))
        else:
            acc.events += 1
            if cost is None:
                acc.unpriced += 1
            else:
                acc.cost = cost if acc.cost is None else _ADD(acc.cost, cost)
            own = acc.tokens
            own[0] += tokens[0]
            own[1] += tokens[1]
            own[2] += tokens[2]
            own[3] += tokens[3]
            own[4] += tokens[4]
        if event.run_id is not None:
            self.add_run(event, us)

    def add_run(self, event: CostEvent, us: int) -> None:
        """The run part of :meth:`add_event` (an event with a ``run_id``): its run's totals, and
        the links of its ``run_path``. The PostgreSQL ledger adds up its batches' runs with it, so
        every ledger places and labels runs alike (the first event's parent, root and agent)."""
        cost = event.cost
        unpriced = 1 if cost is None else 0
        run_id = event.run_id
        if run_id is None:
            return
        if event.run_path:
            self.link(event.run_path, event.root_run_id, us)
        run = self.runs.get(run_id)
        if run is None:
            self.runs[run_id] = RunAcc(
                event.parent_run_id,
                event.root_run_id,
                event.tenant_id,
                event.agent,
                us,
                us,
                Acc(1, unpriced, cost, [0, 0, 0, 0, 0]),
            )
            return
        if us < run.first_us:
            run.first_us = us
        elif us > run.last_us:
            run.last_us = us
        racc = run.acc
        if racc.events == 0:  # known so far only as an ancestor of other runs (a link)
            run.parent_run_id = run.parent_run_id or event.parent_run_id
            run.tenant_id = event.tenant_id
            run.agent = event.agent
        elif run.tenant_id != event.tenant_id:
            run.tenant_id = SEVERAL_TENANTS  # its totals mix tenants: no tenant's to see
        racc.events += 1
        if cost is None:
            racc.unpriced += 1
        else:
            racc.cost = cost if racc.cost is None else _ADD(racc.cost, cost)

    def link(self, path: tuple[str, ...], root_run_id: str | None, us: int) -> None:
        """Make each ancestor in ``path`` (root first) a run with no events of its own, under the
        one before it: a run that recorded nothing still links its subtree into the tree."""
        runs = self.runs
        parent: str | None = None
        for ancestor in path:
            run = runs.get(ancestor)
            if run is None:
                runs[ancestor] = RunAcc(parent, root_run_id, None, None, us, us)
            elif run.parent_run_id is None and not _placed(ancestor, run):
                run.parent_run_id = parent
            parent = ancestor

    def months(self) -> dict[tuple[str, ...], Acc]:
        """The day groups folded into month groups (key with ``YYYY-MM`` in place of the day)."""
        months: dict[tuple[str, ...], Acc] = {}
        for key, acc in self.groups.items():
            month_key = (key[0], key[1][:7], *key[2:])
            target = months.get(month_key)
            if target is None:  # most often: a copy, cheaper than merging into an empty Acc
                months[month_key] = Acc(acc.events, acc.unpriced, acc.cost, acc.tokens.copy())
            else:
                merge_acc(target, acc)
        return months

    def add_adjustment(
        self, key: tuple[str, ...], run_id: str | None, us: int, delta: Decimal, unpriced_delta: int
    ) -> None:
        acc = self.groups.get(key)
        if acc is None:
            acc = self.groups[key] = Acc()
        acc.add_adjustment(delta, unpriced_delta)
        if run_id is not None:
            run = self.runs.get(run_id)
            if run is None:
                run = self.runs[run_id] = RunAcc(None, None, None, None, us, us)
            run.acc.add_adjustment(delta, unpriced_delta)


def event_group_value(name: str, key: tuple[str, ...], reason: str | None) -> str | None:
    """Value of group-by key ``name`` for an event with rollup ``key`` (``None`` when absent)."""
    if name == "reason":
        return reason
    value = key[GROUP_KEYS.index(name)]
    return value or None


def merge_acc(target: Acc, source: Acc) -> None:
    target.events += source.events
    target.unpriced += source.unpriced
    target.cost = add_cost(target.cost, source.cost)
    for i in range(5):
        target.tokens[i] += source.tokens[i]


def _placed(run_id: str, run: RunAcc) -> bool:
    """Whether a link (another run's run_path) may no longer move ``run``: it has events of its
    own, which say where it is, or it is a root. So no tenant's run_path grafts another's run."""
    return run.acc.events > 0 or run.root_run_id == run_id


def merge_run(runs: dict[str, RunAcc], run_id: str, source: RunAcc) -> None:
    """Fold a batch's run totals into ``runs``; the first known parent/root/agent is kept, and the
    tenant becomes :data:`SEVERAL_TENANTS` once events of another tenant join it."""
    target = runs.get(run_id)
    if target is None:
        runs[run_id] = RunAcc(
            source.parent_run_id,
            source.root_run_id,
            source.tenant_id,
            source.agent,
            source.first_us,
            source.last_us,
        )
        target = runs[run_id]
    else:
        if source.acc.events or not _placed(run_id, target):  # a link places only a run known as one
            target.parent_run_id = target.parent_run_id or source.parent_run_id
            target.root_run_id = target.root_run_id or source.root_run_id
        if source.acc.events:  # (adjustments and links carry none: they change no tenant)
            if target.acc.events == 0:  # known so far only as a link: its first events' tenant
                target.tenant_id = source.tenant_id
            elif target.tenant_id != source.tenant_id:
                target.tenant_id = SEVERAL_TENANTS
        target.agent = target.agent or source.agent
        target.first_us = min(target.first_us, source.first_us)
        target.last_us = max(target.last_us, source.last_us)
    merge_acc(target.acc, source.acc)


def group_totals(rows: Iterable[tuple[tuple[str | None, ...], Acc]]) -> list[Totals]:
    """Add up ``(group key, totals)`` pairs into one :class:`Totals` per distinct key."""
    merged: dict[tuple[str | None, ...], Acc] = {}
    for key, acc in rows:
        target = merged.get(key)
        if target is None:
            target = merged[key] = Acc()
        merge_acc(target, acc)
    return [Totals(key, acc.events, acc.unpriced, acc.cost, *acc.tokens) for key, acc in merged.items()]
