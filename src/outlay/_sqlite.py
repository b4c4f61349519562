"""SQLite helpers shared by outlay's embedded stores (event log, budget store)."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["begin_now", "use_wal"]


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
