"""WAL checkpoints off the committing thread, for the SQLite files outlay writes (log, budgets, ledger).

SQLite checkpoints inside whichever ``COMMIT`` grows the write-ahead log past
``wal_autocheckpoint`` pages (1000 by default): that commit then copies the log into the database
file and fsyncs it, a stall of one to a few milliseconds every few hundred commits that lands on
whatever call happened to commit — in the gateway, the p99 of admissions. A
:class:`Checkpointer` raises the hot connection's threshold to ``fallback_pages`` (so the log stays
bounded even if the checkpointer stops) and runs ``PRAGMA wal_checkpoint(PASSIVE)`` from its own
connection on a daemon thread, as often as the commits call for. A passive checkpoint never blocks
a writer or a reader, and the sqlite3 module releases the GIL while it runs, so it proceeds on
another core while commits continue. Durability is unchanged: a commit is as durable as the
connection's ``synchronous`` setting makes it before any checkpoint; the checkpointer's connection
uses the same setting, so a checkpoint syncs what it copies.

Several processes may each run one on the same file: a checkpoint that finds another in progress
returns at once (busy) and the next one catches up.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from typing import Final

from outlay._sqlite import hold_at_fork

__all__ = ["DEFAULT_INTERVAL", "FALLBACK_PAGES", "Checkpointer"]

# fork() waits until no checkpoint is running (see outlay._sqlite.hold_at_fork).
_RUNNING: weakref.WeakSet[Checkpointer] = weakref.WeakSet()
hold_at_fork(_RUNNING, lambda checkpointer: (checkpointer._pass,))

#: Seconds between looks at the commit count: small, frequent copies stall commits least (at 500
#: gateway requests/s: p99 +2.1–2.5 ms every 0.05 s, +2.8–3.3 ms every 0.2 s, +6–8 ms every 1 s).
DEFAULT_INTERVAL: Final = 0.05
#: The hot connection's own threshold (pages of ~4 KiB), reached only if the checkpointer stalls.
FALLBACK_PAGES: Final = 4000


class Checkpointer:
    """Checkpoints the WAL of the SQLite file ``path`` on a daemon thread.

    The store calls :meth:`note_commit` after each commit. Every ``interval`` seconds the thread
    checkpoints if ``commits`` commits were made since its last pass, or any commit at all
    ``max_delay`` seconds ago: frequent small copies under load (which stall commits least), few
    passes — few extra fsyncs — at low rates. ``connection`` is the caller's hot (committing)
    connection: its ``wal_autocheckpoint`` is raised to ``fallback_pages``. Call :meth:`close`
    before closing that connection's database for good.
    """

    def __init__(
        self,
        path: str,
        connection: sqlite3.Connection,
        *,
        synchronous: str,
        interval: float = DEFAULT_INTERVAL,
        commits: int = 1,
        max_delay: float = 1.0,
        fallback_pages: int = FALLBACK_PAGES,
        name: str = "outlay-checkpoint",
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.interval = interval
        self.commits = commits
        self.max_delay = max_delay
        self._committed = 0  # commits noted so far (a lost increment only delays a pass)
        self.checkpoints = 0  # completed passes (for tests and diagnostics)
        self._stop = threading.Event()
        self._own = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            self._own.execute(f"PRAGMA synchronous={synchronous.upper()}")
            connection.execute(f"PRAGMA wal_autocheckpoint={int(fallback_pages)}")
        except BaseException:
            self._own.close()
            raise
        self._pass = threading.Lock()  # held while a checkpoint runs (see hold_at_fork)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    def note_commit(self) -> None:
        """Count a commit of the hot connection (cheap: called on the commit path)."""
        self._committed += 1

    def _run(self) -> None:
        done, last = 0, time.monotonic()
        try:
            while not self._stop.wait(self.interval):
                seen = self._committed
                if seen == done or (seen - done < self.commits and time.monotonic() - last < self.max_delay):
                    continue
                done, last = seen, time.monotonic()
                try:
                    with self._pass:
                        self._own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    # Busy or a transient I/O error: the next pass retries, and the hot connection's
                    # fallback threshold bounds the log meanwhile.
                    continue
                self.checkpoints += 1
        finally:
            self._own.close()

    def close(self) -> None:
        """Stop the thread (after the pass in progress, if any). Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
