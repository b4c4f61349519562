"""SQLite helpers shared by outlay's embedded stores (event log, budget store, ledger)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["begin_now", "compiled_inserts", "hold_at_fork", "insert_many", "use_wal"]


def hold_at_fork(live: weakref.WeakSet[Any], locks: Callable[[Any], Iterable[threading.Lock]]) -> None:
    """Make every fork() wait until each object in ``live`` is between SQLite statements: take
    ``locks(obj)`` of all of them (in one order, so two forks cannot deadlock) before the fork and
    release them after it, in the parent and in the child. A child would otherwise inherit SQLite's
    record of locks held at that instant, and any connection it opens to the file would wait on
    them forever (https://www.sqlite.org/howtocorrupt.html)."""
    held: list[threading.Lock] = []

    def before() -> None:
        for obj in sorted(live, key=id):
            for lock in locks(obj):
                lock.acquire()
                held.append(lock)

    def after() -> None:
        while held:
            held.pop().release()

    os.register_at_fork(before=before, after_in_parent=after, after_in_child=after)


def use_wal(connection: sqlite3.Connection, timeout: float) -> str:
    """Switch ``connection``'s database to WAL and return the journal mode it is in.

    Processes opening a new file at once race to switch it: SQLite answers "database is locked"
    at once to all but one, without its busy handler (which could deadlock there), so the switch
    is retried here for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def begin_now(connection: sqlite3.Connection, busy_ms: int) -> bool:
    """``BEGIN IMMEDIATE`` without a busy wait: False if another connection (another process) holds
    the database's write lock. The connection's busy timeout is ``busy_ms`` again afterwards; any
    other error is raised as it is, for the caller to translate."""
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            return False
        raise
    finally:
        connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return True


_inserts: list[Any] = []  # the compiled insert_rows or None, once loaded
_inserts_lock = threading.Lock()


def _load_inserts() -> Any:
    """``outlay.ledger._speedups.insert_rows`` where it can step statements on the handle of this
    Python's own ``sqlite3`` connections (the same SQLite library, found and self-tested here);
    ``None`` where it was not built, ``OUTLAY_NO_SPEEDUPS=1`` is set, or another SQLite is in use."""
    if os.environ.get("OUTLAY_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from outlay.ledger import _speedups as compiled
    except ImportError:
        return None
    major, minor, patch = sqlite3.sqlite_version_info
    found = compiled.configure_sqlite(
        major * 1_000_000 + minor * 1_000 + patch,
        sqlite3.Connection,
        sqlite3.IntegrityError,
        sqlite3.OperationalError,
        sqlite3.DatabaseError,
        sqlite3.DataError,
        sqlite3.ProgrammingError,
        sqlite3.InternalError,
    )
    if not found:
        return None
    probe = sqlite3.connect(":memory:", isolation_level=None)
    try:
        idle = compiled.in_transaction(probe)
        probe.execute("BEGIN")
        busy = compiled.in_transaction(probe)
        probe.execute("CREATE TEMP TABLE probe (a, b)")
        changed = compiled.insert_rows(probe, "INSERT INTO probe VALUES (?, ?)", [(1, "x"), (2, b"y")])
        rows = probe.execute("SELECT a, b FROM probe ORDER BY a").fetchall()
        probe.execute("ROLLBACK")
    finally:
        probe.close()
    if (idle, busy, changed, rows) != (False, True, 2, [(1, "x"), (2, b"y")]):
        return None
    return compiled.insert_rows


def compiled_inserts() -> Any:
    """The compiled ``insert_rows(connection, sql, rows) -> int`` (``executemany`` in C, the rows
    stepped in blocks with the GIL let go once per block), or ``None``. Loaded once: its SQLite
    functions are configured process-wide."""
    if not _inserts:
        with _inserts_lock:
            if not _inserts:
                _inserts.append(_load_inserts())
    return _inserts[0]


def insert_many(connection: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """``connection.executemany(sql, rows)`` (same rows stored, count and errors); the rows changed.

    Compiled where it can be: ``executemany`` lets the GIL go and takes it back around every row,
    and where another thread of the process is busy in Python (an app's, an event loop) each of
    those takes waits a switch interval (5 ms): a batch of 10,000 rows then takes a minute. The
    compiled inserts let it go once per block of 4,096 rows."""
    compiled = compiled_inserts()
    if compiled is None:
        return connection.executemany(sql, rows).rowcount
    return int(compiled(connection, sql, rows))
