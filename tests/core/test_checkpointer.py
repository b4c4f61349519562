"""WAL checkpoints run on a background thread for the SQLite event log and budget store.

What a user notices: the commits on the request path (an append, a reserve) no longer stop to copy
the log into the database; the data still reaches the database file, the log stays bounded, and
closing the store stops the thread.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import ConfigError
from outlay._checkpoint import Checkpointer
from outlay.budgets import KeyLimit, SQLiteBudgetStore
from outlay.events import CostEvent
from outlay.ledger import SQLiteLedger
from outlay.stream import SQLiteEventLog


def _checkpoint_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "outlay-checkpoint" and t.is_alive()}


def _wait(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_event_log_pages_reach_the_database_file_without_an_inline_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    before = _checkpoint_threads()
    log = SQLiteEventLog(path, checkpoint_interval=0.05)
    assert len(_checkpoint_threads() - before) == 1
    empty = path.stat().st_size
    # ~400 KB: well under the 1000-page default threshold, so SQLite alone would leave it in the WAL.
    log.append([bytes([i % 251]) * 4000 for i in range(100)])
    assert _wait(lambda: path.stat().st_size > empty + 300_000), "the background checkpoint never ran"
    assert [r.payload[:1] for r in log.read("c", 100)] == [bytes([i % 251]) for i in range(100)]
    log.close()
    assert not _checkpoint_threads() - before


def test_event_log_without_checkpointer_leaves_the_log_in_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SQLiteEventLog(path, checkpoint_interval=None)
    empty = path.stat().st_size
    log.append([b"x" * 4000 for _ in range(100)])
    time.sleep(0.3)
    assert path.stat().st_size == empty  # SQLite's own threshold (1000 pages) is not reached
    log.close()


def test_budget_store_checkpoints_in_the_background_and_keeps_counters(tmp_path: Path) -> None:
    path = tmp_path / "budgets.db"
    before = _checkpoint_threads()
    store = SQLiteBudgetStore(path, checkpoint_interval=0.05)
    empty = path.stat().st_size
    key = KeyLimit("tenant:acme", Decimal("1000"), None)
    for i in range(300):
        result = store.reserve(f"r{i}", [key], Decimal("0.5"), 60.0)
        assert result.ok
        store.settle(f"r{i}", Decimal("0.25"))
    assert _wait(lambda: path.stat().st_size > empty), "the background checkpoint never ran"
    store.close()
    assert not _checkpoint_threads() - before
    reopened = SQLiteBudgetStore(path)
    status = reopened.status("tenant:acme", None)
    assert (status.spent, status.reserved) == (Decimal("75.00"), Decimal("0.0"))
    reopened.close()


def test_ledger_checkpoints_in_the_background_and_keeps_every_event(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    before = _checkpoint_threads()
    ledger = SQLiteLedger(path, checkpoint_interval=0.05)
    empty = path.stat().st_size
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    events = [
        CostEvent(time=t0 + timedelta(seconds=i), tenant_id="acme", priced=True, cost=Decimal("0.001"))
        for i in range(300)
    ]
    assert ledger.write(events).inserted == 300
    assert _wait(lambda: path.stat().st_size > empty + 100_000), "the background checkpoint never ran"
    # A connection made later, on another thread, leaves checkpoints to the thread too.
    other: list[int] = []
    worker = threading.Thread(target=lambda: other.append(ledger.event_count()))
    worker.start()
    worker.join()
    assert other == [300]
    ledger.close()
    assert not _checkpoint_threads() - before
    reopened = SQLiteLedger(path, checkpoint_interval=None)
    total = reopened.rollup_totals([], t0.date(), (t0 + timedelta(days=1)).date())[0]
    assert (total.events, total.cost) == (300, Decimal("0.300"))
    reopened.close()


def test_hot_connection_keeps_a_fallback_threshold(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    hot = sqlite3.connect(path, isolation_level=None)
    hot.execute("PRAGMA journal_mode=WAL")
    checkpointer = Checkpointer(path, hot, synchronous="FULL", interval=10.0, fallback_pages=5000)
    assert hot.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 5000
    checkpointer.close()
    checkpointer.close()  # idempotent
    hot.close()


def test_a_log_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    before = _checkpoint_threads()
    log = SQLiteEventLog(tmp_path / "log.db", checkpoint_interval=0.05)
    log.append([b"x"])
    del log
    gc.collect()
    assert _wait(lambda: not _checkpoint_threads() - before)


@pytest.mark.parametrize("interval", [0, -1.0])
def test_bad_checkpoint_interval_is_refused(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        SQLiteEventLog(tmp_path / "log.db", checkpoint_interval=interval)
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        SQLiteLedger(tmp_path / "l.db", checkpoint_interval=interval)
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        SQLiteBudgetStore(tmp_path / "b.db", checkpoint_interval=interval)
