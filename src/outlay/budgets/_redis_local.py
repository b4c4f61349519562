"""What the Redis budget store does in this process while Redis cannot be reached.

Fail closed (``"deny"``): no reservation is admitted. Fail open (``"allow"``): reservations are admitted
without any check against the shared counters, up to ``local_cap`` dollars of un-checked spend in
this process (held, or settled but not yet written to Redis); past it they are refused. Settles and
releases are queued in either mode and replayed in order when Redis answers again; a locally
admitted call is then recorded in Redis as if it had been held there (idempotent on its id).

The queue lives in memory: a process that exits while Redis is still down loses what it holds (the
store logs it on ``close``). The cost events themselves go through the event log, not this queue.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from outlay._errors import BackendUnavailable, InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO, money_str

from ._store import KeyLimit, KeyStatus

__all__ = ["LocalFallback", "PendingOp"]

_log = logging.getLogger("outlay.budgets")
_add: Final = MONEY_CONTEXT.add
_sub: Final = MONEY_CONTEXT.subtract

#: Last statuses seen per key, for ``status`` while Redis is down (fail-open only); bounded.
_SEEN_MAX: Final = 10_000


@dataclass(slots=True)
class PendingOp:
    """A settle or release waiting for Redis. ``nonce`` makes its replay idempotent."""

    kind: Literal["settle", "release"]
    reservation_id: str
    nonce: str
    actual: str = ""  # settle: the cost as decimal text; "" charges the estimate
    local: bool = False  # admitted here while Redis was down: Redis may not know the id
    keys: tuple[KeyLimit, ...] = ()
    amount: str = ""  # local: the estimate as decimal text
    cost: Decimal = ZERO  # local settle: the un-checked spend it carries
    issued: str = ""  # ms when the caller settled/released (a queued op may reach Redis after the deadline)
    reserve_nonce: str = ""  # release: only a hold that this reserve made (its reply was lost)


class LocalFallback:
    """Per-process state of the ``on_unavailable`` policy. Thread-safe."""

    def __init__(self, mode: Literal["deny", "allow"], cap: Decimal) -> None:
        self.mode: Literal["deny", "allow"] = mode
        self.cap = cap
        self.flush_lock = threading.Lock()
        self._lock = threading.Lock()
        self._holds: dict[str, tuple[tuple[KeyLimit, ...], Decimal, str]] = {}
        self._pending: dict[str, PendingOp] = {}  # insertion order is replay order
        self._used = ZERO
        self._seen: dict[str, KeyStatus] = {}

    def describe(self) -> str:
        if self.mode == "deny":
            return "failing closed (on_unavailable='deny'): reservations are refused until it is back"
        return f"failing open (on_unavailable='allow'): up to ${money_str(self.cap)} of un-checked spend here"

    # --- admission without Redis ------------------------------------------------------------------

    def admit(
        self,
        reservation_id: str,
        keys: tuple[KeyLimit, ...],
        *,
        amount: Decimal,
        amount_text: str,
        where: str,
        cause: BackendUnavailable | None,
    ) -> None:
        """Hold ``amount`` locally, or raise :class:`BackendUnavailable` (fail closed, or cap used up)."""
        if self.mode == "deny":
            raise BackendUnavailable(
                f"budget store: Redis at {where} is unreachable; on_unavailable='deny' refuses the call"
            ) from cause
        with self._lock:
            if reservation_id in self._holds or reservation_id in self._pending:
                raise InvalidInput(f"reservation {reservation_id!r} already exists", field="reservation_id")
            if _add(self._used, amount) > self.cap:
                raise BackendUnavailable(
                    f"budget store: Redis at {where} is unreachable and this process's fail-open allowance "
                    f"of ${money_str(self.cap)} is used up (${money_str(self._used)} admitted without "
                    f"Redis); the call needs ${money_str(amount)} and is refused"
                ) from cause
            self._holds[reservation_id] = (keys, amount, amount_text)
            self._used = _add(self._used, amount)

    def settle_local(self, reservation_id: str, actual: Decimal | None, actual_text: str) -> bool:
        """Settle a locally admitted hold: queue its spend for Redis. False if the id is not local."""
        with self._lock:
            hold = self._holds.pop(reservation_id, None)
            if hold is None:
                return False
            keys, amount, amount_text = hold
            cost = amount if actual is None else actual
            self._used = _add(_sub(self._used, amount), cost)
            self._pending[reservation_id] = PendingOp(
                "settle",
                reservation_id,
                f"local-{reservation_id}",
                actual_text,
                True,
                keys,
                amount_text,
                cost,
            )
            return True

    def release_local(self, reservation_id: str) -> bool:
        """Drop a locally admitted hold; a release is still queued in case the reserve reached Redis."""
        with self._lock:
            hold = self._holds.pop(reservation_id, None)
            if hold is None:
                return False
            self._used = _sub(self._used, hold[1])
            self._pending[reservation_id] = PendingOp(
                "release", reservation_id, f"local-{reservation_id}", local=True
            )
            return True

    # --- the queue --------------------------------------------------------------------------------

    def queue(self, op: PendingOp) -> bool:
        """Queue ``op``; False if an operation on that id already waits (it finishes the hold)."""
        with self._lock:
            if op.reservation_id in self._pending:
                return False
            self._pending[op.reservation_id] = op
            return True

    def next_pending(self) -> PendingOp | None:
        with self._lock:
            return next(iter(self._pending.values()), None)

    def done(self, op: PendingOp) -> None:
        with self._lock:
            if self._pending.get(op.reservation_id) is op:
                del self._pending[op.reservation_id]
            if op.local and op.kind == "settle":
                self._used = _sub(self._used, op.cost)

    def pending_count(self) -> int:
        return len(self._pending)

    def used(self) -> Decimal:
        with self._lock:
            return self._used

    def log_unapplied(self) -> None:
        with self._lock:
            if not self._pending:
                return
            settles = [op for op in self._pending.values() if op.kind == "settle"]
            local = sum((op.cost for op in settles if op.local), ZERO)
            _log.error(
                "outlay: Redis budget store closed with %d settle(s) and %d release(s) never applied; "
                "$%s of fail-open spend is not in Redis (the cost events still are in the event log)",
                len(settles),
                len(self._pending) - len(settles),
                money_str(local),
            )

    # --- status without Redis ---------------------------------------------------------------------

    def remember(self, statuses: tuple[KeyStatus, ...]) -> None:
        if self.mode != "allow":
            return
        with self._lock:
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            for status in statuses:
                self._seen[status.key] = status

    def last_status(self, key: str, where: str, cause: BackendUnavailable | None) -> KeyStatus:
        """Fail open: the last status seen plus this process's un-checked amounts. Unknown is not
        zero, so a key never seen (or fail closed) raises :class:`BackendUnavailable`."""
        with self._lock:
            seen = self._seen.get(key) if self.mode == "allow" else None
            if seen is not None:
                held = sum((a for ks, a, _ in self._holds.values() if any(k.key == key for k in ks)), ZERO)
                spent = sum(
                    (
                        op.cost
                        for op in self._pending.values()
                        if op.local and any(k.key == key for k in op.keys)
                    ),
                    ZERO,
                )
                return KeyStatus(key, _add(seen.spent, spent), _add(seen.reserved, held))
        raise BackendUnavailable(
            f"budget store: Redis at {where} is unreachable; status of {key!r} is unknown"
        ) from cause
