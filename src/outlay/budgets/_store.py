"""The budget store seam: counters and reservations, admitted atomically.

A store holds, per counter key, the settled ``spent`` and the ``reserved`` amount of calls in
flight. ``reserve`` checks and holds on *every* key of a call in one atomic step (all admit or
nothing is held): admit iff ``spent + reserved + amount <= limit`` on each key. Because the check
and the hold are one step, N concurrent callers can never all pass the same check; spend can pass a
limit only by the amount settled calls cost *beyond* their reservation.

A hold that is neither settled nor released by its deadline belongs to a caller that crashed (or a
call that outlived its ``ttl``): the call may well have been made and billed, so the hold is
**charged** — its amount moves from reserved to spent — never just dropped (unknown is not zero).
A late ``settle`` then adds only what the call cost beyond that amount; a late ``release`` changes
nothing.

Implementations: :class:`InMemoryBudgetStore` (threads and asyncio in one process), SQLite
(several processes on one machine), Redis later. ``tests/budgets/conformance.py`` runs against each.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO

__all__ = [
    "BudgetStore",
    "InMemoryBudgetStore",
    "KeyLimit",
    "KeyStatus",
    "StoreResult",
    "rolling_slices",
]

_add: Final = MONEY_CONTEXT.add
_sub: Final = MONEY_CONTEXT.subtract

HELD: Final = "held"
SETTLED: Final = "settled"
RELEASED: Final = "released"
EXPIRED: Final = "expired"

#: A finished reservation is remembered this long so a late or repeated settle is still exact.
DEFAULT_RETENTION: Final = 86400.0
#: The in-memory store's memory for a *settled or released* hold: a repeated settle or release
#: changes nothing, and one past this is refused as unknown (never counted twice). An expired hold
#: keeps ``retention``: its late settle still owes the excess over the amount charged.
DEFAULT_FINISHED_RETENTION: Final = 900.0


@dataclass(frozen=True, slots=True)
class KeyLimit:
    """One counter a reservation holds on. ``limit=None`` counts without ever denying (soft-only
    policies); ``window`` makes it a rolling window of that many seconds.

    ``until`` (epoch seconds) is the end of the calendar window (day, month...) the counter counts:
    the store drops the counter once that time plus its ``retention`` has passed — and as long
    after its last change, whichever is later — but never while anything is held on it. ``None``:
    kept for ever (a run's counter, a rolling window's, one named by the caller)."""

    key: str
    limit: Decimal | None = None
    window: int | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A counter's settled spend and in-flight reservations at one moment."""

    key: str
    spent: Decimal
    reserved: Decimal


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What an operation did (``ok``) and every key's status right after it.

    For a denied ``reserve``, ``denied`` is the index in ``statuses`` of the first key that refused.
    """

    ok: bool
    statuses: tuple[KeyStatus, ...]
    denied: int | None = None


def rolling_slices(window: int, now: float) -> tuple[int, int]:
    """``(current slice index, slices kept)`` for a rolling window.

    Rolling spend is kept in slices of ``window // 60`` seconds (at least 1 s) so the store holds a
    bounded number of rows per key. Spend settled at time t counts for at least ``window`` seconds
    and at most two slices longer: a rolling limit errs on the side of refusing, never overspending.
    """
    size = max(1, window // 60)
    return math.floor(now / size), math.ceil(window / size)


def check_keys(keys: Sequence[KeyLimit], amount: Decimal) -> None:
    """Validate a reservation request (shared by every store)."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise InvalidInput(f"expected a non-negative Decimal, got {amount!r}", field="amount")
    if not keys:
        raise InvalidInput("a reservation needs at least one key", field="keys")
    if len({k.key for k in keys}) != len(keys):
        raise InvalidInput("a key appears twice in one reservation", field="keys")
    for kl in keys:
        until = kl.until
        if until is None:
            continue
        if isinstance(until, bool) or not isinstance(until, int | float) or not 0 < until < math.inf:
            raise InvalidInput(
                f"the window end of {kl.key!r} must be a positive epoch time in seconds, got {until!r}",
                field="keys",
            )
        if kl.window is not None:
            raise InvalidInput(
                f"{kl.key!r} is a rolling window: it has no end to be dropped at (until is for "
                "calendar windows)",
                field="keys",
            )


def drop_time(until: float | None, now: float, retention: float) -> float | None:
    """When a counter of a window ending at ``until``, last changed at ``now``, may be dropped
    (if nothing is held on it then): ``None`` for never. Every hold finished on it is remembered
    (for a late or repeated settle) for at most ``retention`` after it finished, which changed the
    counter: such a settle always finds the counter still there."""
    return None if until is None else max(until, now) + retention


class BudgetStore(ABC):
    """Interface of every budget store. All methods are atomic and safe from several threads.

    ``clock`` (epoch seconds) decides reservation expiry and rolling windows; tests inject one.
    """

    clock: Callable[[], float]

    @abstractmethod
    def reserve(
        self, reservation_id: str, keys: Sequence[KeyLimit], amount: Decimal, ttl: float
    ) -> StoreResult:
        """Hold ``amount`` on every key if all admit, else hold nothing (``ok=False``).

        The hold expires ``ttl`` seconds from now if neither settled nor released.
        """

    @abstractmethod
    def settle(self, reservation_id: str, actual: Decimal | None) -> StoreResult:
        """Drop the hold and add ``actual`` (the estimate when ``None``: unknown is not zero) to spend.

        An expired reservation was charged its amount when it expired: settling it adds only what
        ``actual`` is beyond that. Settling twice, or after a release, changes nothing
        (``ok=False``). An unknown id raises :class:`InvalidInput`.
        """

    @abstractmethod
    def release(self, reservation_id: str) -> bool:
        """Drop the hold without spend (the call failed). ``False`` if it was not held any more
        (an expired hold stays charged: nothing says its call was not made)."""

    @abstractmethod
    def status(self, key: str, window: int | None = None) -> KeyStatus:
        """The counter's spend (within ``window`` seconds for a rolling key) and reservations."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the operations made inside into one round trip or transaction where the store can
        (each stays atomic on its own, and one failing does not undo the others). A no-op here."""
        yield

    @contextmanager
    def try_batch(self) -> Iterator[bool]:
        """:meth:`batch` if it can begin at once, for a caller that must not block (an event loop):
        yields ``True`` inside it, or ``False`` (and nothing begun) when the store would first wait
        for a lock or the network. Here: ``False`` — the caller hands the work to a thread."""
        yield False

    def close(self) -> None:  # noqa: B027  # optional hook: in-memory stores hold nothing
        """Release resources."""


class _Counter:
    __slots__ = ("drop_at", "queued", "reserved", "slices", "spent")

    def __init__(self) -> None:
        self.spent = ZERO
        self.reserved = ZERO
        self.slices: dict[int, Decimal] = {}
        self.drop_at: float | None = None  # see drop_time; None: kept for ever
        self.queued = False  # whether an entry for it waits in the store's drop heap

    def spent_at(self, window: int | None, now: float) -> Decimal:
        if window is None:
            return self.spent
        current, kept = rolling_slices(window, now)
        oldest = current - kept
        total = ZERO
        for index in list(self.slices):
            if index < oldest:
                del self.slices[index]
            else:
                total = _add(total, self.slices[index])
        return total

    def add_spend(self, amount: Decimal, window: int | None, now: float) -> None:
        if window is None:
            self.spent = _add(self.spent, amount)
        else:
            index = rolling_slices(window, now)[0]
            self.slices[index] = _add(self.slices.get(index, ZERO), amount)


class _Hold:
    __slots__ = ("amount", "expires", "keys", "state")

    def __init__(self, keys: tuple[KeyLimit, ...], amount: Decimal, expires: float) -> None:
        self.keys = keys
        self.amount = amount
        self.expires = expires
        self.state = HELD


class InMemoryBudgetStore(BudgetStore):
    """Counters in this process, behind one lock (safe for threads; never awaits, so safe in asyncio).

    A settled or released hold is forgotten after ``finished_retention`` seconds (15 min), an
    expired one after ``retention`` (24 h): each finished call costs this process memory (~0.7 KB)
    for that long, so 100 calls/s hold ~60 MB rather than the ~6 GB a day's worth would. A counter
    of a calendar window (``KeyLimit.until``) is dropped ``retention`` after the window ended, once
    nothing is held on it (~1.8 KB each); other counters are kept for ever."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
        finished_retention: float = DEFAULT_FINISHED_RETENTION,
    ) -> None:
        for name, value in (("retention", retention), ("finished_retention", finished_retention)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise InvalidInput(f"must be a number of seconds >= 0, got {value!r}", field=name)
        self.clock = clock
        self._retention = retention
        self._finished = finished_retention
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._holds: dict[str, _Hold] = {}
        self._expiry: list[tuple[float, str]] = []
        self._forget: list[tuple[float, str]] = []
        self._drops: list[tuple[float, str]] = []  # (drop time, counter key): one entry per counter

    @contextmanager
    def try_batch(self) -> Iterator[bool]:
        """Always ``True``: every operation holds this store's lock for microseconds, never waits on I/O."""
        yield True

    def _counter(self, kl: KeyLimit, now: float) -> _Counter:
        """The counter of ``kl`` (made if new), about to be changed at ``now``: its drop time moves."""
        counter = self._counters.get(kl.key)
        if counter is None:
            counter = self._counters[kl.key] = _Counter()
        counter.drop_at = drop_at = drop_time(kl.until, now, self._retention)
        if drop_at is not None and not counter.queued:
            counter.queued = True
            heapq.heappush(self._drops, (drop_at, kl.key))
        return counter

    def _tick(self, now: float) -> None:
        """Charge holds past their deadline (a crashed caller) and forget old finished ones."""
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            deadline, rid = heapq.heappop(expiry)
            hold = self._holds.get(rid)
            if hold is not None and hold.state == HELD:
                for kl in hold.keys:
                    counter = self._counter(kl, now)
                    counter.reserved = _sub(counter.reserved, hold.amount)
                    # spent at its deadline, not whenever the store is next used: on a rolling
                    # window it leaves the window when a call made then would
                    counter.add_spend(hold.amount, kl.window, deadline)
                hold.state = EXPIRED
                heapq.heappush(self._forget, (now + self._retention, rid))
        forget = self._forget
        while forget and forget[0][0] <= now:
            _, rid = heapq.heappop(forget)
            self._holds.pop(rid, None)
        drops = self._drops
        while drops and drops[0][0] <= now:
            _, key = heapq.heappop(drops)
            due = self._counters.get(key)
            if due is None:
                continue
            if due.drop_at is None or due.reserved:
                # kept for ever now, or held on: the change that frees it queues it again
                due.queued = False
            elif due.drop_at > now:  # changed since it was queued
                heapq.heappush(drops, (due.drop_at, key))
            else:
                del self._counters[key]

    def _statuses(self, keys: Sequence[KeyLimit], now: float) -> tuple[KeyStatus, ...]:
        out = []
        for kl in keys:
            counter = self._counters.get(kl.key)
            if counter is None:  # (a read makes no counter: it would never be dropped)
                out.append(KeyStatus(kl.key, ZERO, ZERO))
            else:
                out.append(KeyStatus(kl.key, counter.spent_at(kl.window, now), counter.reserved))
        return tuple(out)

    def reserve(
        self, reservation_id: str, keys: Sequence[KeyLimit], amount: Decimal, ttl: float
    ) -> StoreResult:
        check_keys(keys, amount)
        with self._lock:
            now = self.clock()
            self._tick(now)
            if reservation_id in self._holds:
                raise InvalidInput(f"reservation {reservation_id!r} already exists", field="reservation_id")
            # a refused call leaves no counter behind (one per denied key would never be dropped)
            counters = [self._counters.get(kl.key) or _Counter() for kl in keys]
            spent = [c.spent_at(kl.window, now) for c, kl in zip(counters, keys, strict=True)]
            for index, kl in enumerate(keys):
                if (
                    kl.limit is not None
                    and _add(_add(spent[index], counters[index].reserved), amount) > kl.limit
                ):
                    statuses = tuple(
                        KeyStatus(k.key, s, c.reserved) for k, s, c in zip(keys, spent, counters, strict=True)
                    )
                    return StoreResult(False, statuses, index)
            counters = [self._counter(kl, now) for kl in keys]
            for counter in counters:
                counter.reserved = _add(counter.reserved, amount)
            self._holds[reservation_id] = _Hold(tuple(keys), amount, now + ttl)
            heapq.heappush(self._expiry, (now + ttl, reservation_id))
            return StoreResult(
                True,
                tuple(KeyStatus(k.key, s, c.reserved) for k, s, c in zip(keys, spent, counters, strict=True)),
            )

    def settle(self, reservation_id: str, actual: Decimal | None) -> StoreResult:
        if actual is not None and (not isinstance(actual, Decimal) or not actual.is_finite() or actual < 0):
            raise InvalidInput(f"expected a non-negative Decimal, got {actual!r}", field="actual")
        with self._lock:
            now = self.clock()
            self._tick(now)
            hold = self._holds.get(reservation_id)
            if hold is None:
                raise InvalidInput(
                    f"unknown (or long-expired) reservation {reservation_id!r}", field="reservation"
                )
            if hold.state in (SETTLED, RELEASED):
                return StoreResult(False, self._statuses(hold.keys, now))
            cost = hold.amount if actual is None else actual
            if hold.state == EXPIRED:  # charged its amount when it expired: only the excess is left
                cost = max(ZERO, _sub(cost, hold.amount))
            for kl in hold.keys:
                counter = self._counter(kl, now)
                if hold.state == HELD:
                    counter.reserved = _sub(counter.reserved, hold.amount)
                if cost:
                    counter.add_spend(cost, kl.window, now)
            if hold.state == HELD:  # (an expired one is already due to be forgotten, later)
                heapq.heappush(self._forget, (now + self._finished, reservation_id))
            hold.state = SETTLED
            return StoreResult(True, self._statuses(hold.keys, now))

    def release(self, reservation_id: str) -> bool:
        with self._lock:
            now = self.clock()
            self._tick(now)
            hold = self._holds.get(reservation_id)
            if hold is None:
                raise InvalidInput(
                    f"unknown (or long-expired) reservation {reservation_id!r}", field="reservation"
                )
            if hold.state != HELD:
                return False
            for kl in hold.keys:
                counter = self._counter(kl, now)
                counter.reserved = _sub(counter.reserved, hold.amount)
            hold.state = RELEASED
            heapq.heappush(self._forget, (now + self._finished, reservation_id))
            return True

    def status(self, key: str, window: int | None = None) -> KeyStatus:
        with self._lock:
            now = self.clock()
            self._tick(now)
            counter = self._counters.get(key)
            if counter is None:
                return KeyStatus(key, ZERO, ZERO)
            return KeyStatus(key, counter.spent_at(window, now), counter.reserved)
