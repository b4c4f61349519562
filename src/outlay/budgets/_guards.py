"""Runaway guards for one run, and the per-tenant cost-rate limit (noisy neighbours).

Guards keep per-run state in this process: a run lives in one process, so call counts, request
fingerprints and recent spend need no shared store. The cost-rate limit is a token bucket over
dollars per tenant, also per process (a Redis store can share it later).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Context, Decimal
from typing import Final

import orjson

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO, to_money

__all__ = ["CostRateLimit", "RunGuards", "fingerprint"]

VELOCITY_WINDOW: Final = 60.0
# The bucket level is a throttling signal, never recorded spend, so refill (elapsed float seconds
# times a rate) may round: upward, so a tenant is never let through early.
_BUCKET: Final = Context(prec=28, rounding=ROUND_CEILING)


def fingerprint(*parts: object) -> str:
    """A stable hash of a request (model, messages, tools...) to spot identical repeated calls."""
    try:
        body = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError as exc:
        raise InvalidInput(f"cannot fingerprint the request: {exc}", field="fingerprint") from None
    return hashlib.sha256(body).hexdigest()


def _positive_int(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInput(f"expected a positive integer, got {value!r}", field=name)


@dataclass(frozen=True, slots=True, init=False)
class RunGuards:
    """Limits that stop a runaway run with :class:`~outlay.RunStopped`.

    ``max_calls``: billable calls per run. ``max_identical_calls``: calls with the same request
    fingerprint (a retry storm); the next one stops the run. ``max_cost_per_minute``: the run's
    settled spend over the last 60 seconds, plus what its calls in flight hold, plus the next
    call's estimate may not pass it.
    """

    max_calls: int | None
    max_identical_calls: int | None
    max_cost_per_minute: Decimal | None

    def __init__(
        self,
        max_calls: int | None = None,
        max_identical_calls: int | None = None,
        max_cost_per_minute: Decimal | str | int | None = None,
    ) -> None:
        _positive_int("max_calls", max_calls)
        _positive_int("max_identical_calls", max_identical_calls)
        velocity = None
        if max_cost_per_minute is not None:
            velocity = to_money(max_cost_per_minute, field="max_cost_per_minute")
        object.__setattr__(self, "max_calls", max_calls)
        object.__setattr__(self, "max_identical_calls", max_identical_calls)
        object.__setattr__(self, "max_cost_per_minute", velocity)


@dataclass(slots=True)
class RunGuardState:
    """What the guards remember about one run."""

    calls: int = 0
    fingerprints: Counter[str] = field(default_factory=Counter)
    recent: deque[tuple[float, Decimal]] = field(default_factory=deque)
    # Calls admitted and not yet settled, under a cost-velocity guard: reservation id ->
    # (deadline, estimate). Counted like spend, or N concurrent calls would all pass the limit.
    held: dict[str, tuple[float, Decimal]] = field(default_factory=dict)
    stopped: tuple[str, str] | None = None  # (reason, message) once stopped: it stays stopped

    def recent_spend(self, now: float) -> Decimal:
        while self.recent and self.recent[0][0] <= now - VELOCITY_WINDOW:
            self.recent.popleft()
        total = ZERO
        for _, amount in self.recent:
            total = MONEY_CONTEXT.add(total, amount)
        return total

    def held_spend(self, now: float) -> Decimal:
        """What the calls in flight hold; a hold past its deadline (a crashed caller's) is dropped."""
        total = ZERO
        for reservation_id, (deadline, amount) in list(self.held.items()):
            if deadline <= now:
                del self.held[reservation_id]
            else:
                total = MONEY_CONTEXT.add(total, amount)
        return total

    def check(
        self, guards: RunGuards, fp: str | None, estimate: Decimal, now: float
    ) -> tuple[str, str] | None:
        """``(reason, message)`` if this call must stop the run, else ``None``. Does not count it."""
        if self.stopped is not None:
            return self.stopped
        if guards.max_calls is not None and self.calls + 1 > guards.max_calls:
            return "max_calls", f"the run reached its limit of {guards.max_calls} LLM calls"
        if (
            fp is not None
            and guards.max_identical_calls is not None
            and self.fingerprints[fp] + 1 > guards.max_identical_calls
        ):
            return (
                "retry_storm",
                f"the same request was already sent {self.fingerprints[fp]} times "
                f"(limit {guards.max_identical_calls}): a retry storm",
            )
        if guards.max_cost_per_minute is not None:
            recent = self.recent_spend(now)
            held = self.held_spend(now)
            if MONEY_CONTEXT.add(MONEY_CONTEXT.add(recent, held), estimate) > guards.max_cost_per_minute:
                in_flight = f" (and ${held} is held by calls in flight)" if held else ""
                return (
                    "cost_velocity",
                    f"the run spent ${recent} in the last minute{in_flight} and this call needs up to "
                    f"${estimate}, over its limit of ${guards.max_cost_per_minute} per minute",
                )
        return None

    def count(self, fp: str | None, hold: tuple[str, float, Decimal] | None = None) -> None:
        """Count an admitted call; ``hold`` (reservation id, deadline, estimate) keeps what it
        holds until :meth:`finish`, for a cost-velocity guard."""
        self.calls += 1
        if fp is not None:
            self.fingerprints[fp] += 1
        if hold is not None:
            reservation_id, deadline, amount = hold
            self.held[reservation_id] = (deadline, amount)

    def uncount(self, fp: str | None, reservation_id: str | None = None) -> None:
        """Take back a :meth:`count` whose call was refused after all (by a budget or throttle)."""
        self.calls -= 1
        if fp is not None:
            self.fingerprints[fp] -= 1
        if reservation_id is not None:
            self.held.pop(reservation_id, None)

    def finish(self, reservation_id: str) -> None:
        """The call was settled or released: it holds nothing any more."""
        self.held.pop(reservation_id, None)


@dataclass(frozen=True, slots=True, init=False)
class CostRateLimit:
    """A tenant may spend ``rate`` per ``per`` seconds, in bursts of up to ``burst`` (default ``rate``)."""

    rate: Decimal
    per: float
    burst: Decimal

    def __init__(
        self, rate: Decimal | str | int, per: float = 60.0, burst: Decimal | str | int | None = None
    ) -> None:
        amount = to_money(rate, field="rate")
        if amount <= 0:
            raise InvalidInput(f"must be positive, got {amount}", field="rate")
        if isinstance(per, bool) or not isinstance(per, int | float) or not 0 < per < math.inf:
            raise InvalidInput(f"expected a positive, finite number of seconds, got {per!r}", field="per")
        most = amount if burst is None else to_money(burst, field="burst")
        if most <= 0:
            raise InvalidInput(f"must be positive, got {most}", field="burst")
        object.__setattr__(self, "rate", amount)
        object.__setattr__(self, "per", float(per))
        object.__setattr__(self, "burst", most)


class TokenBuckets:
    """One dollar token bucket per tenant. ``take`` answers ``None`` (go) or seconds to wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[Decimal, float]] = {}

    def _level(self, tenant: str, limit: CostRateLimit, now: float) -> Decimal:
        capacity = limit.burst
        level, then = self._levels.get(tenant, (capacity, now))
        refill = _BUCKET.multiply(
            limit.rate, _BUCKET.divide(Decimal(max(0.0, now - then)), Decimal(limit.per))
        )
        return min(capacity, _BUCKET.add(level, refill))

    def take(self, tenant: str, limit: CostRateLimit, amount: Decimal, now: float) -> float | None:
        with self._lock:
            level = self._level(tenant, limit, now)
            # A call larger than the bucket can go when the bucket is full, leaving it in debt.
            need = min(amount, limit.burst)
            if level < need:
                self._levels[tenant] = (level, now)
                missing = _BUCKET.subtract(need, level)
                return float(_BUCKET.divide(_BUCKET.multiply(missing, Decimal(limit.per)), limit.rate))
            self._levels[tenant] = (_BUCKET.subtract(level, amount), now)
            return None

    def adjust(self, tenant: str, limit: CostRateLimit, delta: Decimal, now: float) -> None:
        """Give back (negative ``delta``) or take more once the actual cost is known."""
        with self._lock:
            level = self._level(tenant, limit, now)
            self._levels[tenant] = (min(limit.burst, _BUCKET.subtract(level, delta)), now)
