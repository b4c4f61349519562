"""SQLite helpers shared by outlay's embedded stores (event log, budget store)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["begin_now", "hold_at_fork", "use_wal"]


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
