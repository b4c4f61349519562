"""Overlapping the SQLite ledger's Python work with SQLite's own, on the machine's second core.

Writing a big batch has two halves of about equal cost per event: building the rows and rollup
deltas (Python, under the GIL) and inserting them (SQLite's B-tree work, which the sqlite3 module
runs with the GIL released). Run one after the other they add up; an :class:`Inserter` lets the
second run on a background thread while the caller builds the next chunk's rows.

Two details make the overlap real rather than nominal:

* Each chunk is one statement (a multi-row ``VALUES``), so the background thread needs the GIL
  twice per chunk — to bind the values and to return — instead of once per row. With
  ``executemany`` it would wait for the GIL after every row's step while the caller holds it, up
  to the interpreter's switch interval (5 ms) each time.
* :meth:`Inserter.submit` hands the GIL over before it returns: the caller waits until the
  background thread has started, which then binds the chunk and releases the GIL inside
  ``sqlite3_step``. Without that handshake the background thread could wait a whole switch
  interval before it even started.

The statement runs on the caller's connection, inside the caller's transaction: the caller must
not use that connection until the returned future is done (:meth:`Inserter.finish`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

__all__ = ["Inserter"]


def _execute(
    connection: sqlite3.Connection, sql: str, params: Sequence[Any], started: threading.Event
) -> int:
    started.set()  # the submitter may go on: it gets the GIL back once this thread is inside SQLite
    return connection.execute(sql, params).rowcount


class Inserter:
    """One background thread that runs one statement at a time on a connection it is given."""

    def __init__(self, name: str = "outlay-ledger-insert") -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    def submit(self, connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Future[int]:
        """Start ``connection.execute(sql, params)`` on the background thread; its future gives the
        statement's row count (or raises its error)."""
        started = threading.Event()
        future = self._executor.submit(_execute, connection, sql, params, started)
        started.wait()
        return future

    @staticmethod
    def finish(future: Future[int] | None) -> None:
        """Wait for ``future`` (if any) without raising: for cleanup on an error path, so the
        connection is idle again before the caller rolls back."""
        if future is not None:
            wait([future])

    def close(self) -> None:
        self._executor.shutdown(wait=True)
