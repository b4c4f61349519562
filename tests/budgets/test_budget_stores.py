"""Run the store conformance suite against the in-memory and SQLite stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay._errors import BackendUnavailable, InvalidInput
from outlay.budgets import InMemoryBudgetStore, KeyLimit, KeyStatus, SQLiteBudgetStore

from .conformance import BudgetStoreConformance, Factory
from .conftest import FakeClock


class TestInMemoryStore(BudgetStoreConformance):
    @pytest.fixture
    def make_store(self) -> Factory:
        return lambda clock: InMemoryBudgetStore(clock=clock)


class TestSQLiteStore(BudgetStoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Factory:
        return lambda clock: SQLiteBudgetStore(tmp_path / "budgets.db", clock=clock)


def test_sqlite_state_is_shared_between_connections(tmp_path: Path, clock: FakeClock) -> None:
    from decimal import Decimal

    first = SQLiteBudgetStore(tmp_path / "b.db", clock=clock)
    second = SQLiteBudgetStore(tmp_path / "b.db", clock=clock)
    key = [KeyLimit("k", Decimal("1"))]
    assert first.reserve("a", key, Decimal("0.75"), 60).ok
    assert not second.reserve("b", key, Decimal("0.5"), 60).ok
    second.settle("a", Decimal("0.75"))  # settled by another process than the one that reserved
    assert first.status("k").spent == Decimal("0.75")
    first.close()
    second.close()


def test_sqlite_unopenable_path_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="cannot open budget store"):
        SQLiteBudgetStore(tmp_path / "missing-dir" / "b.db")


# --- a property: any interleaving keeps the counters exact and the limit respected ---------------

from decimal import Decimal  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release", "tick"]),
        st.integers(0, 7),
        st.integers(0, 300),  # cents
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_any_interleaving_keeps_exact_counters(ops: list[tuple[str, int, int]]) -> None:
    clock = FakeClock(1_000_000.0)
    store = InMemoryBudgetStore(clock=clock)
    limit = Decimal("5.00")
    keys = [KeyLimit("k", limit)]
    held: dict[str, tuple[Decimal, float]] = {}  # the model: id -> (amount, expires)
    spent = Decimal(0)
    next_id = 0
    for op, slot, cents in ops:
        amount = Decimal(cents) / 100
        # model expiry first, as the store does: an expired hold is charged
        spent += sum((a for a, exp in held.values() if exp <= clock.now), Decimal(0))
        held = {rid: (a, exp) for rid, (a, exp) in held.items() if exp > clock.now}
        if op == "reserve":
            rid = f"r{next_id}"
            next_id += 1
            ok = store.reserve(rid, keys, amount, 30.0).ok
            assert ok == (spent + sum(a for a, _ in held.values()) + amount <= limit)
            if ok:
                held[rid] = (amount, clock.now + 30.0)
        elif op in ("settle", "release") and held:
            rid = sorted(held)[slot % len(held)]
            if op == "settle":
                assert store.settle(rid, amount).ok
                spent += amount
            else:
                assert store.release(rid)
            del held[rid]
        elif op == "tick":
            clock.advance(slot * 5)
        spent += sum((a for a, exp in held.values() if exp <= clock.now), Decimal(0))
        held = {rid: (a, exp) for rid, (a, exp) in held.items() if exp > clock.now}
        status = store.status("k")
        assert status.spent == spent
        assert status.reserved == sum((a for a, _ in held.values()), Decimal(0))


class TestInMemoryRetention:
    """A long-running process with the default (in-memory) store kept every finished hold for
    24 h: ~0.7 KB per call, ~6 GB a day at 100 calls/s. Settled and released holds are now
    forgotten after 15 min; an expired one keeps 24 h, since its late settle still owes money."""

    def test_finished_holds_are_forgotten_and_memory_stays_bounded(self, clock: FakeClock) -> None:
        from decimal import Decimal

        from outlay._errors import InvalidInput

        store = InMemoryBudgetStore(clock=clock)
        key = [KeyLimit("tenant:acme", Decimal(10**9))]
        for i in range(2000):
            assert store.reserve(f"r{i}", key, Decimal("0.01"), ttl=300).ok
            if i % 2:
                assert store.settle(f"r{i}", Decimal("0.005")).ok
            else:
                assert store.release(f"r{i}")
        clock.advance(899)
        assert store.settle("r1", Decimal("0.005")).ok is False  # a repeat: changes nothing
        clock.advance(2)
        with pytest.raises(InvalidInput, match="unknown"):
            store.settle("r1", Decimal("0.005"))  # forgotten: refused, never counted twice
        assert len(store._holds) == 0  # the memory is given back
        assert store.status("tenant:acme").spent == Decimal("0.005") * 1000

    def test_an_expired_hold_still_takes_its_late_settle(self, clock: FakeClock) -> None:
        from decimal import Decimal

        store = InMemoryBudgetStore(clock=clock)
        key = [KeyLimit("tenant:acme", None)]
        store.reserve("slow", key, Decimal("1"), ttl=10)
        clock.advance(3600)  # expired (charged 1), and past the 15 min of finished holds
        assert store.status("tenant:acme").spent == Decimal("1")
        assert store.settle("slow", Decimal("1.5")).ok
        assert store.status("tenant:acme").spent == Decimal("1.5")  # only the excess was added

    @pytest.mark.parametrize("bad", [-1, float("nan"), "900", True])
    def test_bad_retentions_are_refused(self, bad: object) -> None:
        from outlay._errors import InvalidInput

        with pytest.raises(InvalidInput, match="seconds"):
            InMemoryBudgetStore(finished_retention=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="seconds"):
            InMemoryBudgetStore(retention=bad)  # type: ignore[arg-type]


# --- counters of ended calendar windows are dropped: memory and rows stay bounded -----------------


def _counters(store: InMemoryBudgetStore | SQLiteBudgetStore) -> int:
    if isinstance(store, InMemoryBudgetStore):
        return len(store._counters)
    return int(store._db.execute("SELECT COUNT(*) FROM budget_counters").fetchone()[0])


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_counters_stay_bounded_over_many_days_of_per_key_daily_budgets(
    kind: str, tmp_path: Path, clock: FakeClock
) -> None:
    # A daily budget per user (or feature, or API key) with a new key on most calls makes one
    # counter per call, each never read again once its day is over. They were all kept: ~1.8 KB
    # each in memory (a new user per call at 100 calls/s: ~15 GB a day), a row each in SQLite.
    from outlay.budgets import Budget, BudgetEngine

    store: InMemoryBudgetStore | SQLiteBudgetStore = (
        InMemoryBudgetStore(clock=clock)
        if kind == "memory"
        else SQLiteBudgetStore(tmp_path / "b.db", clock=clock)
    )
    engine = BudgetEngine(
        store,
        policies=[
            Budget(limit="5", scope="tenant", period="day"),
            Budget(limit="1", scope="user", period="day"),
            Budget(limit="100", scope="tenant", period="month"),
        ],
    )
    per_day, days = 200, 12
    most = 0
    for day in range(days):
        for call in range(per_day):
            reservation = engine.reserve({"tenant": "acme", "user": f"u{day}-{call}"}, "0.02", ttl=600)
            if call % 50:  # and some callers crash: their holds expire, are charged, then dropped
                engine.settle(reservation, "0.01")
            clock.advance(86400 / per_day)
            most = max(most, _counters(store))
        today = engine.status({"tenant": "acme"}, Budget(limit="5", scope="tenant", period="day"))
        assert today.spent + today.reserved > 0  # today's spend is all there
    # today's and yesterday's users (kept a retention after their day), the tenant's days, its month
    assert most <= 2 * per_day + 3 + 2, most
    assert _counters(store) <= 2 * per_day + 3 + 2
    month = engine.status({"tenant": "acme"}, Budget(limit="100", scope="tenant", period="month"))
    crashed = days * per_day // 50
    # exact: nothing of this month's spend was dropped (crashed calls are charged their hold)
    assert (month.spent, month.reserved) == (
        Decimal("0.01") * (days * per_day - crashed) + Decimal("0.02") * crashed,
        0,
    )
    store.close()


# --- a SQLite file made before counters were dropped ----------------------------------------------

#: The schema SQLiteBudgetStore wrote before counters had a drop time (outlay up to 2026-12-07).
_OLD_SCHEMA = """
CREATE TABLE budget_counters (key TEXT PRIMARY KEY, spent TEXT NOT NULL, reserved TEXT NOT NULL);
CREATE TABLE budget_slices (
    key TEXT NOT NULL, idx INTEGER NOT NULL, spent TEXT NOT NULL, PRIMARY KEY (key, idx));
CREATE TABLE budget_holds (
    id TEXT PRIMARY KEY, keys TEXT NOT NULL, amount TEXT NOT NULL, expires REAL NOT NULL,
    state TEXT NOT NULL, forget_at REAL);
CREATE INDEX budget_holds_expiry ON budget_holds (state, expires);
CREATE INDEX budget_holds_forget ON budget_holds (forget_at);
"""


def _old_file(path: Path, clock: FakeClock) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.executemany(
        "INSERT INTO budget_counters VALUES (?, ?, ?)",
        [("tenant:acme:day:2026-03-14", "3.5", "0"), ("tenant:acme:day:2026-03-15", "1.25", "0.5")],
    )
    db.execute(
        "INSERT INTO budget_holds (id, keys, amount, expires, state) VALUES (?, ?, ?, ?, ?)",
        ("old-hold", '[["tenant:acme:day:2026-03-15", null]]', "0.5", clock.now + 300, "held"),
    )
    db.commit()
    db.close()


def test_a_sqlite_file_made_before_counters_were_dropped_opens_and_keeps_its_counters(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "old.db"
    _old_file(path, clock)
    store = SQLiteBudgetStore(path, clock=clock)
    assert store.status("tenant:acme:day:2026-03-15").spent == Decimal("1.25")
    assert store.settle("old-hold", Decimal("0.5")).ok  # a hold made by the old code settles exactly
    assert store.status("tenant:acme:day:2026-03-15") == KeyStatus(
        "tenant:acme:day:2026-03-15", Decimal("1.75"), Decimal(0)
    )
    end = clock.now + 12 * 3600
    key = [KeyLimit("tenant:acme:day:2026-03-15", Decimal("10"), until=end)]
    assert store.reserve("new", key, Decimal("1"), 60).ok
    assert store.settle("new", Decimal("1")).ok
    clock.now = end + 86400
    assert store.status("tenant:acme:day:2026-03-15").spent == 0  # now it has a window end: dropped
    assert store.status("tenant:acme:day:2026-03-14").spent == Decimal("3.5")  # never told one: kept
    store.close()


def test_processes_opening_an_old_sqlite_file_at_once_migrate_it_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    import threading

    path = tmp_path / "old.db"
    _old_file(path, clock)
    errors: list[BaseException] = []
    stores: list[SQLiteBudgetStore] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        start.wait()
        try:
            stores.append(SQLiteBudgetStore(path, clock=clock))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(s.status("tenant:acme:day:2026-03-14").spent == Decimal("3.5") for s in stores)
    for s in stores:
        s.close()


@pytest.mark.parametrize("bad", [-1, float("nan"), "86400", True])
def test_sqlite_refuses_a_retention_that_would_drop_live_counters(tmp_path: Path, bad: object) -> None:
    # retention=-86400 dropped a day's counter as its day began: its spend forgotten mid-day.
    with pytest.raises(InvalidInput, match="seconds") as caught:
        SQLiteBudgetStore(tmp_path / "b.db", retention=bad)  # type: ignore[arg-type]
    assert caught.value.field == "retention"
