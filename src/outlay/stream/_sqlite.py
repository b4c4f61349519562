"""The embedded event log: one SQLite file in WAL mode, shared by threads and processes.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the WAL on every commit, so an ``append`` that
returned survives kill -9 and power loss (https://www.sqlite.org/pragma.html#pragma_synchronous).

Throughput without giving that up comes from *group commit*: concurrent ``append`` calls share one
transaction and one fsync. The first caller becomes the leader and commits everything queued; the
callers that arrive meanwhile queue up behind it and the next of them leads the following group.
Each caller returns once its own payloads are committed, and a failed commit fails every caller
in that group (none of their payloads was written).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from outlay._checkpoint import DEFAULT_INTERVAL, Checkpointer
from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay._sqlite import begin_now, hold_at_fork, insert_many, use_wal

from ._base import EventLog, LogRecord, check_consumer, check_offset, check_payloads, check_read_args

__all__ = ["SQLiteEventLog"]

# fork() waits until no append or read of an open log is inside SQLite (Outlay reopens the log in a
# child, which must not inherit a lock it would wait on: see Outlay._after_fork).
_OPEN: weakref.WeakSet[SQLiteEventLog] = weakref.WeakSet()
hold_at_fork(_OPEN, lambda log: (log._write_lock, log._read_lock))

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    # AUTOINCREMENT: offsets are never reused, even after truncate() empties the table.
    'CREATE TABLE IF NOT EXISTS log ("offset" INTEGER PRIMARY KEY AUTOINCREMENT,'
    " payload BLOB NOT NULL, appended_at INTEGER NOT NULL)",  # unix time, microseconds
    'CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY, "offset" INTEGER NOT NULL)',
)
_END_OFFSET: Final = "SELECT seq FROM sqlite_sequence WHERE name = 'log'"
_INSERT: Final = "INSERT INTO log (payload, appended_at) VALUES (?, ?)"
_READ: Final = (
    'SELECT "offset", payload FROM log WHERE "offset" >'
    ' coalesce((SELECT "offset" FROM consumers WHERE name = ?), 0) ORDER BY "offset" LIMIT ?'
)
# SQLite integers are 64-bit: a larger LIMIT is an OverflowError, and this many rows is "all" anyway.
_MAX_LIMIT: Final = 2**62
_COMMITTED: Final = 'SELECT "offset" FROM consumers WHERE name = ?'
_ACK: Final = (
    'INSERT INTO consumers (name, "offset") VALUES (?, ?)'
    ' ON CONFLICT (name) DO UPDATE SET "offset" = max("offset", excluded."offset")'
)


class _Pending:
    """One caller's payloads waiting in the group-commit queue."""

    __slots__ = ("done", "error", "first_offset", "payloads")

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.done = False
        self.first_offset = 0
        self.error: BaseException | None = None


class SQLiteEventLog(EventLog):
    """A durable event log in the SQLite file at ``path`` (created if missing).

    ``busy_timeout`` is how long a write waits for another *process* holding the file's write
    lock; ``poll_interval`` bounds how late a waiting ``read`` sees records appended by another
    process (appends in this process wake readers at once); ``checkpoint_interval`` is the seconds
    between WAL checkpoints on a background thread (:mod:`outlay._checkpoint`; ``None``: SQLite runs
    them inside whichever append's commit fills the log). Open the log after ``fork()``, never
    before: SQLite connections must not cross a fork.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        poll_interval: float = 0.05,
        checkpoint_interval: float | None = DEFAULT_INTERVAL,
    ) -> None:
        self._path = os.fspath(path)
        if not self._path or self._path == ":memory:" or self._path.startswith("file:"):
            raise ConfigError(
                f"expected a file path, got {self._path!r} (use InMemoryEventLog for a memory log)",
                field="path",
            )
        if not busy_timeout > 0 or not poll_interval > 0:
            raise ConfigError("busy_timeout and poll_interval must be > 0 seconds", field="busy_timeout")
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ConfigError("checkpoint_interval must be > 0 seconds or None", field="checkpoint_interval")
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._closed = False
        self._checkpointer: Checkpointer | None = None
        # Group commit state: the queue of waiting appends and whether a leader is committing.
        self._group = threading.Condition()
        self._queue: list[_Pending] = []
        self._leading = False
        # Every write in this process goes through one connection under one lock, so our own
        # threads never meet at SQLite's file lock (whose busy handler sleeps in steps of ms).
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Wakes readers waiting in read(); the generation tells them an append happened.
        self._appended = threading.Condition()
        self._generation = 0
        self._registered: set[str] = set()
        with self._translate("open"):
            self._writer = self._connect()
            try:
                self._reader = self._connect()
            except BaseException:
                self._writer.close()
                raise
            try:
                self._init_schema()
                # WAL checkpoints on a background thread, not inside an unlucky append's commit.
                self._checkpointer = (
                    Checkpointer(
                        self._path, self._writer, synchronous="FULL", interval=checkpoint_interval, commits=20
                    )
                    if checkpoint_interval is not None
                    else None
                )
                if self._checkpointer is not None:  # a store dropped without close() stops it too
                    weakref.finalize(self, self._checkpointer.close)
                _OPEN.add(self)
            except BaseException:
                self._reader.close()
                self._writer.close()
                raise

    @property
    def path(self) -> str:
        """The SQLite file this log lives in."""
        return self._path

    # -- connections -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves. check_same_thread=False
        # is safe because each connection is only used under its own lock.
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = use_wal(conn, self._busy_timeout)
            if str(mode).lower() != "wal":
                raise BackendError(f"SQLite event log {self._path}: cannot use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self) -> None:
        with self._transaction(self._writer) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BackendError(
                    f"SQLite event log {self._path}: schema version {version} is newer than this"
                    f" outlay supports ({SCHEMA_VERSION}); upgrade outlay"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Translate sqlite3 errors into BackendError at the seam (the original is chained)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite event log {self._path}: {what} failed: {exc}") from exc

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection, *, began: bool = False) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a transaction that reads then writes cannot
        # fail half-way with SQLITE_BUSY when another process writes (busy_timeout applies here).
        if not began:
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open; the first error is the one to report.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"SQLite event log {self._path} is closed")

    @staticmethod
    def _end(conn: sqlite3.Connection) -> int:
        row = conn.execute(_END_OFFSET).fetchone()
        return int(row[0]) if row else 0

    # -- append (group commit) -------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        pending = _Pending(check_payloads(payloads))
        with self._group:
            self._check_open()
            if not pending.payloads:
                return []
            self._queue.append(pending)
            while self._leading and not pending.done:
                self._group.wait()
            lead = not pending.done
            if lead:
                self._leading = True
                batch, self._queue = self._queue, []
        if lead:
            self._lead(batch)
        return self._offsets(pending, lead)

    def try_append(self, payloads: Sequence[bytes]) -> list[int] | None:
        """:meth:`append` now, or ``None`` (nothing appended) if it would wait: another append of
        this process is committing or queued, or another process holds the file's write lock
        (``BEGIN IMMEDIATE`` tried without a busy wait)."""
        pending = _Pending(check_payloads(payloads))
        with self._group:
            self._check_open()
            if not pending.payloads:
                return []
            if self._leading or self._queue:
                return None
            self._leading = True
        if not self._lead([pending], wait=False):
            return None
        return self._offsets(pending, lead=True)

    def _offsets(self, pending: _Pending, lead: bool) -> list[int]:
        error = pending.error
        if error is None:
            return list(range(pending.first_offset, pending.first_offset + len(pending.payloads)))
        if lead and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt and friends belong to the leader's thread only
        # A fresh exception per caller: one instance raised in many threads would share (and
        # garble) its traceback.
        if type(error) is BackendError:
            raise BackendError(str(error)) from error.__cause__
        raise BackendError(f"SQLite event log {self._path}: append failed: {error!r}") from error

    def _lead(self, batch: list[_Pending], *, wait: bool = True) -> bool:
        """Commit ``batch`` as the group's leader. True once its outcome is decided (committed, or
        failed: the error is on each pending); False, nothing written, when ``wait`` is False and
        the write lock was taken. Either way the next queued append may lead once this returns."""
        error: BaseException | None = None
        committed = False
        try:
            committed = self._commit(batch, wait=wait)
        except BaseException as exc:
            error = exc
        with self._group:
            for pending in batch:
                pending.error = error
                pending.done = True
            self._leading = False
            self._group.notify_all()  # followers return, and one of the newly queued leads next
        if error is None and committed:
            with self._appended:
                self._generation += 1
                self._appended.notify_all()
        return committed or error is not None

    def _commit(self, batch: list[_Pending], *, wait: bool = True) -> bool:
        now = time.time_ns() // 1000
        rows = [(payload, now) for pending in batch for payload in pending.payloads]
        if not self._write_lock.acquire(blocking=wait):
            return False
        try:
            with self._translate("append"):
                began = not wait
                if began and not begin_now(self._writer, int(self._busy_timeout * 1000)):
                    return False
                with self._transaction(self._writer, began=began) as conn:
                    last = self._end(conn)
                    insert_many(conn, _INSERT, rows)
                    # Under the write lock AUTOINCREMENT hands out last+1, last+2, ...; check, never
                    # assume.
                    if self._end(conn) != last + len(rows):
                        raise BackendError(f"SQLite event log {self._path}: offsets were not contiguous")
        finally:
            self._write_lock.release()
        if self._checkpointer is not None:
            self._checkpointer.note_commit()
        offset = last + 1
        for pending in batch:
            pending.first_offset = offset
            offset += len(pending.payloads)
        return True

    # -- consumers -------------------------------------------------------------------------------

    def read(self, consumer: str, max_records: int = 1000, timeout: float = 0.0) -> list[LogRecord]:
        check_consumer(consumer)
        check_read_args(max_records, timeout)
        deadline = time.monotonic() + timeout
        self.register(consumer)
        while True:
            generation = self._generation
            with self._read_lock, self._translate("read"):
                self._check_open()
                rows = self._reader.execute(_READ, (consumer, min(max_records, _MAX_LIMIT))).fetchall()
            if rows:
                return [LogRecord(int(offset), bytes(payload)) for offset, payload in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._appended:
                if generation == self._generation and not self._closed:
                    # Capped: another process's appends cannot notify us, so we poll for them.
                    self._appended.wait(min(remaining, self._poll_interval))

    def ack(self, consumer: str, offset: int) -> None:
        check_consumer(consumer)
        check_offset(offset, "offset")
        with self._write_lock:
            self._check_open()
            with self._translate("ack"), self._transaction(self._writer) as conn:
                end = self._end(conn)
                if offset > end:
                    raise InvalidInput(f"{offset} is beyond the end of the log ({end})", field="offset")
                conn.execute(_ACK, (consumer, offset))
        self._registered.add(consumer)

    def committed(self, consumer: str) -> int:
        check_consumer(consumer)
        with self._read_lock, self._translate("committed"):
            self._check_open()
            row = self._reader.execute(_COMMITTED, (consumer,)).fetchone()
        return int(row[0]) if row else 0

    def end_offset(self) -> int:
        with self._read_lock, self._translate("end_offset"):
            self._check_open()
            return self._end(self._reader)

    def register(self, consumer: str) -> None:
        check_consumer(consumer)
        if consumer in self._registered:
            self._check_open()
            return
        with self._write_lock:
            self._check_open()
            with self._translate("register"), self._transaction(self._writer) as conn:
                conn.execute('INSERT OR IGNORE INTO consumers (name, "offset") VALUES (?, 0)', (consumer,))
        self._registered.add(consumer)

    def truncate(self, before_offset: int) -> int:
        check_offset(before_offset, "before_offset")
        with self._write_lock:
            self._check_open()
            with self._translate("truncate"), self._transaction(self._writer) as conn:
                count, slowest = conn.execute('SELECT count(*), min("offset") FROM consumers').fetchone()
                if not count:
                    return 0
                limit = min(before_offset, int(slowest) + 1)
                return conn.execute('DELETE FROM log WHERE "offset" < ?', (limit,)).rowcount

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._group:
            if self._closed:
                return
            self._closed = True
            # Appends already queued still commit (their callers are waiting); new ones are refused.
            while self._leading or self._queue:
                self._group.wait()
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._write_lock, self._read_lock, self._translate("close"):
            self._reader.close()
            self._writer.close()
        with self._appended:
            self._appended.notify_all()  # waiting readers wake up and see the log closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SQLiteEventLog({Path(self._path)!s}, {state})"
