"""The producer's local spool: events that NATS did not acknowledge, kept on disk until it does.

One SQLite file per producer process, WAL mode with ``synchronous=FULL``: a spooled event survives
kill -9 and power loss, exactly like an event in :class:`~outlay.stream.SQLiteEventLog`. Rows are
drained in ``id`` order. A lock file (``<path>.lock``, ``flock``) keeps a second process from
draining the same spool at the same time.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Final, TextIO

from outlay._errors import BackendError, ConfigError
from outlay._sqlite import insert_many

from ._nats_route import Outgoing

__all__ = ["Spool"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " subject TEXT NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL)"
)


class Spool:
    """A durable FIFO of :class:`Outgoing` messages, safe to use from several threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._lock_file = self._take_lock(self.path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(_SCHEMA)
            self._pending: int = self._conn.execute("SELECT count(*) FROM spool").fetchone()[0]
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise BackendError(f"cannot open the NATS spool {self.path}: {exc}") from exc

    @staticmethod
    def _take_lock(path: str) -> TextIO:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            handle = open(f"{path}.lock", "a")  # noqa: SIM115 - held open for the spool's lifetime
        except OSError as exc:
            raise ConfigError(
                f"cannot create the spool lock file next to {path}: {exc}", field="spool_path"
            ) from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError(
                f"{path} is in use by another process; give each producer process its own spool",
                field="spool_path",
            ) from None
        return handle

    def __len__(self) -> int:
        """Messages waiting (kept in memory: this process is the only writer, see the lock)."""
        return self._pending

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> int:
        # One transaction, one fsync, however many rows (autocommit would fsync each of them).
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                count = insert_many(self._conn, sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): then ROLLBACK would fail
                # and hide the error that matters.
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise
            return count

    def add(self, items: Sequence[Outgoing]) -> None:
        """Store ``items`` durably (one transaction, fsynced) after everything already spooled."""
        rows: list[tuple[object, ...]] = [(i.subject, i.msg_id, i.payload) for i in items]
        try:
            added = self._write("INSERT INTO spool (subject, msg_id, payload) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise BackendError(f"NATS is unreachable and the spool {self.path} failed: {exc}") from exc
        with self._lock:
            self._pending += added

    def peek(self, limit: int) -> list[tuple[int, Outgoing]]:
        """The oldest ``limit`` messages with their row ids, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, subject, msg_id, payload FROM spool ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(row[0], Outgoing(row[1], row[2], bytes(row[3]))) for row in rows]

    def remove(self, ids: Sequence[int]) -> None:
        """Forget the messages ``ids`` (NATS acknowledged them)."""
        try:
            removed = self._write("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])
        except sqlite3.Error as exc:
            # Not fatal: the rows are sent again later and deduplicated by Nats-Msg-Id.
            raise BackendError(f"cannot update the spool {self.path}: {exc}") from exc
        with self._lock:
            self._pending -= removed

    def close(self) -> None:
        """Close the file; whatever is still spooled is sent by the next producer that opens it."""
        with self._lock:
            self._conn.close()
            self._lock_file.close()
