"""SQLite helpers shared by outlay's embedded stores (event log, budget store)."""

from __future__ import annotations

import sqlite3

__all__ = ["begin_now"]


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
