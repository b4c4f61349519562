"""SQLite budget store: several processes on one machine share counters through one file.

Every operation is one ``BEGIN IMMEDIATE`` transaction: SQLite takes the database's write lock at
``BEGIN``, so two processes can never both read the same counters and both admit. Amounts are
stored as exact decimal TEXT and summed in Python under ``MONEY_CONTEXT`` (SQLite's own ``SUM``
would go through floats).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Final

from outlay._checkpoint import DEFAULT_INTERVAL, Checkpointer
from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO
from outlay._sqlite import begin_now, use_wal

from ._store import (
    DEFAULT_RETENTION,
    EXPIRED,
    HELD,
    RELEASED,
    SETTLED,
    BudgetStore,
    KeyLimit,
    KeyStatus,
    StoreResult,
    check_keys,
    drop_time,
    rolling_slices,
)

__all__ = ["SQLiteBudgetStore"]

_add: Final = MONEY_CONTEXT.add
#: Settled holds past retention are deleted at most this often (seconds of the store's clock).
_FORGET_EVERY: Final = 1.0
#: Counters of ended windows deleted per sweep; a full batch makes the next operation sweep again.
_DROP_BATCH: Final = 500
_sub: Final = MONEY_CONTEXT.subtract

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS budget_counters (
    key TEXT PRIMARY KEY, spent TEXT NOT NULL, reserved TEXT NOT NULL, drop_at REAL);
CREATE TABLE IF NOT EXISTS budget_slices (
    key TEXT NOT NULL, idx INTEGER NOT NULL, spent TEXT NOT NULL, PRIMARY KEY (key, idx));
CREATE TABLE IF NOT EXISTS budget_holds (
    id TEXT PRIMARY KEY, keys TEXT NOT NULL, amount TEXT NOT NULL, expires REAL NOT NULL,
    state TEXT NOT NULL, forget_at REAL);
CREATE INDEX IF NOT EXISTS budget_holds_expiry ON budget_holds (state, expires);
CREATE INDEX IF NOT EXISTS budget_holds_forget ON budget_holds (forget_at);
"""
#: After the migration of a file made before counters were dropped (it has no ``drop_at``).
_DROP_INDEX: Final = """
CREATE INDEX IF NOT EXISTS budget_counters_drop ON budget_counters (drop_at) WHERE drop_at IS NOT NULL
"""


class SQLiteBudgetStore(BudgetStore):
    """Budget counters in a SQLite file (WAL), shared by every process that opens the same path.

    ``checkpoint_interval``: seconds between WAL checkpoints run on a background thread (see
    :mod:`outlay._checkpoint`); ``None`` leaves them to SQLite, inside whichever commit fills the log.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
        busy_timeout: float = 30.0,
        checkpoint_interval: float | None = DEFAULT_INTERVAL,
    ) -> None:
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ConfigError("checkpoint_interval must be > 0 seconds or None", field="checkpoint_interval")
        # A negative retention would drop a calendar window's counter before its window ended
        # (its spend forgotten while admission still counts on it); NaN would never drop one.
        if isinstance(retention, bool) or not isinstance(retention, int | float) or not retention >= 0:
            raise InvalidInput(f"must be a number of seconds >= 0, got {retention!r}", field="retention")
        self.clock = clock
        self._retention = retention
        self._lock = threading.RLock()  # re-entered by the operations of a batch()
        self._busy_ms = int(busy_timeout * 1000)
        self._batch_owner: int | None = None
        self._next_forget = float("-inf")
        self._checkpointer: Checkpointer | None = None
        try:
            self._db = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            use_wal(self._db, busy_timeout)
            # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._tx() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(budget_counters)")}
                if "drop_at" not in columns:  # its counters have none: kept, as they always were
                    db.execute("ALTER TABLE budget_counters ADD COLUMN drop_at REAL")
                db.execute(_DROP_INDEX)
            # WAL checkpoints on a background thread, not inside an unlucky reserve or settle.
            self._checkpointer = (
                Checkpointer(
                    str(path), self._db, synchronous="NORMAL", interval=checkpoint_interval, commits=40
                )
                if checkpoint_interval is not None
                else None
            )
            if self._checkpointer is not None:  # a store dropped without close() stops it too
                weakref.finalize(self, self._checkpointer.close)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open budget store {str(path)!r}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if self._batch_owner == threading.get_ident():
                # Inside batch(): this operation is a savepoint of the batch's transaction.
                with self._savepoint(db):
                    yield db
                return
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise BackendError(f"budget store: cannot begin a transaction: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.note_commit()
            except BaseException as exc:
                with suppress(sqlite3.Error):  # the original error is the one to report
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(f"budget store: {exc}") from exc
                raise

    @staticmethod
    @contextmanager
    def _savepoint(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("SAVEPOINT op")
        try:
            yield
        except BaseException as exc:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"budget store: {exc}") from exc
            raise
        db.execute("RELEASE op")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction (one commit) for the operations this thread makes
        inside; each is a savepoint, so one that fails is undone alone. Other threads wait, as for
        any transaction; other processes wait on the file lock until the batch commits."""
        with self._tx():
            self._batch_owner = threading.get_ident()
            try:
                yield
            finally:
                self._batch_owner = None

    @contextmanager
    def try_batch(self) -> Iterator[bool]:
        """:meth:`batch` if no thread of this process holds the store and no process holds the
        database's write lock (``BEGIN IMMEDIATE`` tried without a busy wait); else ``False``."""
        if not self._lock.acquire(blocking=False):
            yield False
            return
        try:
            db = self._db
            try:
                began = begin_now(db, self._busy_ms)  # another process writing: do not wait here
            except sqlite3.Error as exc:
                raise BackendError(f"budget store: cannot begin a transaction: {exc}") from exc
            if not began:
                yield False
                return
            self._batch_owner = threading.get_ident()
            try:
                yield True
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            finally:
                self._batch_owner = None
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise BackendError(f"budget store: {exc}") from exc
            if self._checkpointer is not None:
                self._checkpointer.note_commit()
        finally:
            self._lock.release()

    # --- helpers, all inside a transaction ---------------------------------------------------

    @staticmethod
    def _reserved(db: sqlite3.Connection, key: str) -> tuple[Decimal, Decimal]:
        row = db.execute("SELECT spent, reserved FROM budget_counters WHERE key = ?", (key,)).fetchone()
        return (ZERO, ZERO) if row is None else (Decimal(row[0]), Decimal(row[1]))

    def _put(
        self, db: sqlite3.Connection, kl: KeyLimit, spent: Decimal, reserved: Decimal, now: float
    ) -> None:
        """Write the counter of ``kl``, changed at ``now`` (its drop time moves: ``drop_time``)."""
        db.execute(
            "INSERT INTO budget_counters (key, spent, reserved, drop_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET spent = excluded.spent, reserved = excluded.reserved, "
            "drop_at = excluded.drop_at",
            (kl.key, str(spent), str(reserved), drop_time(kl.until, now, self._retention)),
        )

    def _status(self, db: sqlite3.Connection, key: str, window: int | None, now: float) -> KeyStatus:
        spent, reserved = self._reserved(db, key)
        if window is not None:
            current, kept = rolling_slices(window, now)
            db.execute("DELETE FROM budget_slices WHERE key = ? AND idx < ?", (key, current - kept))
            spent = ZERO
            for (text,) in db.execute("SELECT spent FROM budget_slices WHERE key = ?", (key,)):
                spent = _add(spent, Decimal(text))
        return KeyStatus(key, spent, reserved)

    def _shift_reserved(
        self, db: sqlite3.Connection, keys: Sequence[KeyLimit], delta: Decimal, now: float
    ) -> None:
        for kl in keys:
            spent, reserved = self._reserved(db, kl.key)
            self._put(db, kl, spent, _add(reserved, delta), now)

    def _add_spend(
        self, db: sqlite3.Connection, keys: Sequence[KeyLimit], cost: Decimal, at: float, now: float
    ) -> None:
        """Add ``cost`` spent at ``at`` (a rolling window's slice) to each key, at ``now``."""
        for kl in keys:
            if kl.window is None:
                spent, reserved = self._reserved(db, kl.key)
                self._put(db, kl, _add(spent, cost), reserved, now)
                continue
            index = rolling_slices(kl.window, at)[0]
            row = db.execute(
                "SELECT spent FROM budget_slices WHERE key = ? AND idx = ?", (kl.key, index)
            ).fetchone()
            total = _add(ZERO if row is None else Decimal(row[0]), cost)
            db.execute(
                "INSERT OR REPLACE INTO budget_slices (key, idx, spent) VALUES (?, ?, ?)",
                (kl.key, index, str(total)),
            )

    @staticmethod
    def _keys(text: str) -> tuple[KeyLimit, ...]:
        # [key, window, until]; a hold written before counters were dropped has no until
        return tuple(KeyLimit(k[0], None, k[1], k[2] if len(k) > 2 else None) for k in json.loads(text))

    def _tick(self, db: sqlite3.Connection, now: float) -> None:
        """Charge holds past their deadline (a crashed caller, maybe another process: its call may
        have been billed), exactly on time; forget settled ones past retention, at most every
        ``_FORGET_EVERY`` seconds (that needs no precision, and the common operation then pays
        only one indexed lookup)."""
        expired = db.execute(
            "SELECT id, keys, amount, expires FROM budget_holds WHERE state = ? AND expires <= ?", (HELD, now)
        ).fetchall()
        for rid, keys, amount, expires in expired:
            held = self._keys(keys)
            self._shift_reserved(db, held, -Decimal(amount), now)
            # spent at its deadline, not whenever the store is next used (rolling windows)
            self._add_spend(db, held, Decimal(amount), min(float(expires), now), now)
            db.execute(
                "UPDATE budget_holds SET state = ?, forget_at = ? WHERE id = ?",
                (EXPIRED, now + self._retention, rid),
            )
        if now >= self._next_forget:
            self._next_forget = now + _FORGET_EVERY
            db.execute("DELETE FROM budget_holds WHERE forget_at <= ?", (now,))
            self._drop_counters(db, now)

    def _drop_counters(self, db: sqlite3.Connection, now: float) -> None:
        """Delete counters of ended windows past their drop time, a bounded batch at a time."""
        due = db.execute(
            "SELECT key, reserved FROM budget_counters WHERE drop_at <= ? LIMIT ?", (now, _DROP_BATCH)
        ).fetchall()
        if not due:
            return
        if len(due) == _DROP_BATCH:  # more are due: the next operation goes on
            self._next_forget = now
        # Held on (only a process of an older outlay, which leaves drop_at alone, can leave one
        # here): kept, and out of the sweep until a change sets its drop time again.
        held = [(key,) for key, reserved in due if Decimal(reserved) != 0]
        db.executemany("UPDATE budget_counters SET drop_at = NULL WHERE key = ?", held)
        db.executemany(
            "DELETE FROM budget_counters WHERE key = ?", [(key,) for key, r in due if Decimal(r) == 0]
        )

    def _hold(self, db: sqlite3.Connection, rid: str) -> tuple[tuple[KeyLimit, ...], Decimal, str]:
        row = db.execute("SELECT keys, amount, state FROM budget_holds WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise InvalidInput(f"unknown (or long-expired) reservation {rid!r}", field="reservation")
        return self._keys(row[0]), Decimal(row[1]), str(row[2])

    # --- the seam -----------------------------------------------------------------------------

    def reserve(
        self, reservation_id: str, keys: Sequence[KeyLimit], amount: Decimal, ttl: float
    ) -> StoreResult:
        check_keys(keys, amount)
        with self._tx() as db:
            now = self.clock()
            self._tick(db, now)
            if db.execute("SELECT 1 FROM budget_holds WHERE id = ?", (reservation_id,)).fetchone():
                raise InvalidInput(f"reservation {reservation_id!r} already exists", field="reservation_id")
            statuses = tuple(self._status(db, kl.key, kl.window, now) for kl in keys)
            for index, (kl, st) in enumerate(zip(keys, statuses, strict=True)):
                if kl.limit is not None and _add(_add(st.spent, st.reserved), amount) > kl.limit:
                    return StoreResult(False, statuses, index)
            for kl, st in zip(keys, statuses, strict=True):
                if kl.window is None:  # the status read is the counter row: no second read
                    self._put(db, kl, st.spent, _add(st.reserved, amount), now)
                else:
                    self._shift_reserved(db, (kl,), amount, now)
            held = json.dumps([[k.key, k.window, k.until] for k in keys])
            db.execute(
                "INSERT INTO budget_holds (id, keys, amount, expires, state) VALUES (?, ?, ?, ?, ?)",
                (reservation_id, held, str(amount), now + ttl, HELD),
            )
            return StoreResult(
                True, tuple(KeyStatus(s.key, s.spent, _add(s.reserved, amount)) for s in statuses)
            )

    def settle(self, reservation_id: str, actual: Decimal | None) -> StoreResult:
        if actual is not None and (not isinstance(actual, Decimal) or not actual.is_finite() or actual < 0):
            raise InvalidInput(f"expected a non-negative Decimal, got {actual!r}", field="actual")
        with self._tx() as db:
            now = self.clock()
            self._tick(db, now)
            keys, amount, state = self._hold(db, reservation_id)
            if state in (SETTLED, RELEASED):
                return StoreResult(False, tuple(self._status(db, k.key, k.window, now) for k in keys))
            cost = amount if actual is None else actual
            if state == EXPIRED:  # charged its amount when it expired: only the excess is left
                cost = max(ZERO, _sub(cost, amount))
            statuses: list[KeyStatus] = []
            for kl in keys:
                if kl.window is None:  # one read and one write of the counter row
                    spent, reserved = self._reserved(db, kl.key)
                    if state == HELD:
                        reserved = _sub(reserved, amount)
                    spent = _add(spent, cost)
                    self._put(db, kl, spent, reserved, now)
                    statuses.append(KeyStatus(kl.key, spent, reserved))
                    continue
                if state == HELD:
                    self._shift_reserved(db, (kl,), -amount, now)
                if cost:
                    self._add_spend(db, (kl,), cost, now, now)
                statuses.append(self._status(db, kl.key, kl.window, now))
            db.execute(
                "UPDATE budget_holds SET state = ?, forget_at = COALESCE(forget_at, ?) WHERE id = ?",
                (SETTLED, now + self._retention, reservation_id),
            )
            return StoreResult(True, tuple(statuses))

    def release(self, reservation_id: str) -> bool:
        with self._tx() as db:
            now = self.clock()
            self._tick(db, now)
            keys, amount, state = self._hold(db, reservation_id)
            if state != HELD:
                return False
            self._shift_reserved(db, keys, -amount, now)
            db.execute(
                "UPDATE budget_holds SET state = ?, forget_at = ? WHERE id = ?",
                (RELEASED, now + self._retention, reservation_id),
            )
            return True

    def status(self, key: str, window: int | None = None) -> KeyStatus:
        with self._tx() as db:
            now = self.clock()
            self._tick(db, now)
            return self._status(db, key, window, now)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._db.close()
