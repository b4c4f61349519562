"""The conformance suite every :class:`~outlay.budgets.BudgetStore` must pass.

A store's test module subclasses :class:`BudgetStoreConformance` and provides a ``make_store``
fixture returning ``factory(clock) -> BudgetStore`` (a Redis store plugs in the same way).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from outlay._errors import InvalidInput
from outlay.budgets import BudgetStore, KeyLimit

from .conftest import FakeClock

Factory = Callable[[FakeClock], BudgetStore]
D = Decimal


class BudgetStoreConformance:
    @pytest.fixture
    def store(self, make_store: Factory, clock: FakeClock) -> BudgetStore:
        return make_store(clock)

    # --- admission rule ------------------------------------------------------------------------

    def test_admits_up_to_the_limit_exactly_and_not_a_cent_more(self, store: BudgetStore) -> None:
        key = [KeyLimit("tenant:acme", D("1.00"))]
        assert store.reserve("a", key, D("0.60"), 60).ok
        assert store.reserve("b", key, D("0.40"), 60).ok  # spent+reserved+estimate == limit admits
        denied = store.reserve("c", key, D("0.000000001"), 60)
        assert not denied.ok
        assert denied.denied == 0
        assert denied.statuses[0].reserved == D("1.00")

    def test_settle_records_actual_and_frees_the_rest(self, store: BudgetStore) -> None:
        key = [KeyLimit("k", D("1"))]
        store.reserve("a", key, D("0.50"), 60)
        result = store.settle("a", D("0.125"))
        assert result.ok
        assert store.status("k") == result.statuses[0]
        assert (store.status("k").spent, store.status("k").reserved) == (D("0.125"), D(0))

    def test_actual_above_estimate_is_recorded_in_full(self, store: BudgetStore) -> None:
        key = [KeyLimit("k", D("1"))]
        store.reserve("a", key, D("0.90"), 60)
        store.settle("a", D("1.30"))
        assert store.status("k").spent == D("1.30")
        assert not store.reserve("b", key, D(0), 60).ok  # over the limit: even a free call waits

    def test_settle_without_actual_charges_the_estimate(self, store: BudgetStore) -> None:
        store.reserve("a", [KeyLimit("k")], D("0.3"), 60)
        store.settle("a", None)
        assert store.status("k").spent == D("0.3")

    def test_amounts_stay_exact(self, store: BudgetStore) -> None:
        key = [KeyLimit("k", D("1"))]
        tiny = D("0.000000000000000001234567890123456789")
        for index in range(5):
            store.reserve(f"r{index}", key, tiny, 60)
            store.settle(f"r{index}", tiny)
        assert store.status("k").spent == tiny * 5

    def test_no_limit_counts_without_denying(self, store: BudgetStore) -> None:
        assert store.reserve("a", [KeyLimit("k", None)], D("1000000"), 60).ok
        assert store.status("k").reserved == D("1000000")

    # --- several keys: all or nothing ----------------------------------------------------------

    def test_one_denying_key_holds_nothing_on_the_others(self, store: BudgetStore) -> None:
        keys = [KeyLimit("tenant", D("10")), KeyLimit("feature", D("1")), KeyLimit("run", D("5"))]
        store.reserve("seed", [KeyLimit("feature", D("1"))], D("0.9"), 60)
        result = store.reserve("a", keys, D("0.2"), 60)
        assert not result.ok
        assert result.denied == 1
        assert store.status("tenant").reserved == 0
        assert store.status("run").reserved == 0
        assert store.status("feature").reserved == D("0.9")

    def test_settle_applies_to_every_key(self, store: BudgetStore) -> None:
        keys = [KeyLimit("a", D("10")), KeyLimit("b", None)]
        store.reserve("r", keys, D("1"), 60)
        store.settle("r", D("0.5"))
        assert store.status("a").spent == store.status("b").spent == D("0.5")

    # --- lifecycle ------------------------------------------------------------------------------

    def test_release_frees_without_spend(self, store: BudgetStore) -> None:
        store.reserve("a", [KeyLimit("k", D("1"))], D("1"), 60)
        assert store.release("a") is True
        assert store.status("k").reserved == 0
        assert store.status("k").spent == 0
        assert store.release("a") is False
        assert not store.settle("a", D("1")).ok  # a released call cannot be charged later

    def test_double_settle_records_once(self, store: BudgetStore) -> None:
        store.reserve("a", [KeyLimit("k")], D("1"), 60)
        assert store.settle("a", D("0.7")).ok
        assert not store.settle("a", D("0.7")).ok
        assert store.status("k").spent == D("0.7")

    def test_unknown_reservation_is_an_error(self, store: BudgetStore) -> None:
        with pytest.raises(InvalidInput, match="reservation"):
            store.settle("nope", D(1))
        with pytest.raises(InvalidInput, match="reservation"):
            store.release("nope")

    def test_duplicate_id_and_bad_requests_are_refused(self, store: BudgetStore) -> None:
        store.reserve("a", [KeyLimit("k")], D("1"), 60)
        with pytest.raises(InvalidInput, match="already exists"):
            store.reserve("a", [KeyLimit("k")], D("1"), 60)
        with pytest.raises(InvalidInput, match="amount"):
            store.reserve("b", [KeyLimit("k")], D("-1"), 60)
        with pytest.raises(InvalidInput, match="keys"):
            store.reserve("c", [KeyLimit("k"), KeyLimit("k")], D("1"), 60)
        with pytest.raises(InvalidInput, match="keys"):
            store.reserve("d", [], D("1"), 60)
        with pytest.raises(InvalidInput, match="actual"):
            store.settle("a", D("-0.1"))
        assert store.status("k").reserved == D("1")

    def test_a_crashed_callers_hold_is_charged_when_it_expires(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        # Its call may have been made and billed: the hold's amount is spent, never just dropped
        # (before, a process killed mid-call cost its tenant nothing once the hold lapsed).
        key = [KeyLimit("k", D("1"))]
        assert store.reserve("crashed", key, D("0.6"), 30).ok
        assert not store.reserve("b", key, D("0.5"), 30).ok
        clock.advance(29.9)
        assert (store.status("k").spent, store.status("k").reserved) == (0, D("0.6"))
        clock.advance(0.1)
        assert (store.status("k").spent, store.status("k").reserved) == (D("0.6"), 0)
        assert not store.reserve("c", key, D("0.5"), 30).ok
        assert store.reserve("d", key, D("0.4"), 30).ok

    def test_settle_after_expiry_adds_only_the_excess(self, store: BudgetStore, clock: FakeClock) -> None:
        store.reserve("slow", [KeyLimit("k", D("2"))], D("0.4"), 10)
        store.reserve("slower", [KeyLimit("k", D("2"))], D("0.4"), 10)
        clock.advance(11)
        assert (store.status("k").spent, store.status("k").reserved) == (D("0.8"), 0)
        assert store.settle("slow", D("0.25")).ok  # cheaper than its hold: stays charged the hold
        assert store.status("k").spent == D("0.8")
        assert not store.settle("slow", D("0.4")).ok
        assert store.settle("slower", D("0.55")).ok  # dearer: the excess is added
        assert store.status("k").spent == D("0.95")

    def test_release_after_expiry_keeps_the_charge(self, store: BudgetStore, clock: FakeClock) -> None:
        store.reserve("a", [KeyLimit("k", D("1"))], D("0.4"), 10)
        clock.advance(10)
        assert store.release("a") is False
        assert (store.status("k").spent, store.status("k").reserved) == (D("0.4"), 0)

    def test_an_expired_hold_on_a_rolling_window_is_charged_in_it(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        key = [KeyLimit("r", D("1"), 3600)]
        store.reserve("crashed", key, D("0.3"), 10)
        clock.advance(11)
        assert (store.status("r", 3600).spent, store.status("r", 3600).reserved) == (D("0.3"), 0)
        clock.advance(3700)
        assert store.status("r", 3600).spent == 0  # and it leaves the window like any spend

    def test_an_expired_hold_is_charged_at_its_deadline_not_when_the_store_is_next_used(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        key = [KeyLimit("r", D("1"), 3600)]
        store.reserve("crashed", key, D("0.8"), 300)
        clock.advance(4 * 3600)  # nothing touches the store for four hours
        assert store.status("r", 3600).spent == 0  # a call of four hours ago is out of the hour
        assert store.reserve("next", key, D("0.5"), 300).ok

    # --- rolling windows ------------------------------------------------------------------------

    def test_rolling_window_forgets_old_spend(self, store: BudgetStore, clock: FakeClock) -> None:
        key = [KeyLimit("k:rolling:3600", D("1"), 3600)]
        store.reserve("a", key, D("0.8"), 60)
        store.settle("a", D("0.8"))
        clock.advance(1800)
        assert not store.reserve("b", key, D("0.3"), 60).ok
        assert store.status("k:rolling:3600", 3600).spent == D("0.8")
        clock.advance(1800 + 3600 // 60 * 2)  # the window plus at most two slices
        assert store.status("k:rolling:3600", 3600).spent == 0
        assert store.reserve("c", key, D("0.3"), 60).ok

    def test_rolling_window_keeps_spend_for_the_whole_window(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        key = [KeyLimit("w", D("1"), 120)]
        store.reserve("a", key, D("1"), 60)
        store.settle("a", D("1"))
        for step in range(1, 12):  # up to 110 s later: still inside the 120 s window
            clock.advance(10)
            assert not store.reserve(f"x{step}", key, D("0.01"), 60).ok, f"{step * 10}s after"
        clock.advance(10 + 2 * 2)  # the window plus at most two 2 s slices
        assert store.reserve("later", key, D("0.01"), 60).ok

    # --- counters of ended calendar windows are dropped ------------------------------------------
    # A counter of a day (month, hour) window is never read by admission once the window ended; a
    # long-running process kept every one of them forever (~1.8 KB each in memory, a row or a key
    # on disk). It is now dropped at its window's end plus the store's retention (24 h), or that
    # long after it was last touched, whichever is later, and never while anything is held on it.

    DAY: str = "tenant:acme:day:2026-03-15"
    RETENTION: float = 86400.0

    @staticmethod
    def _day_end(clock: FakeClock) -> float:
        return clock.now + 12 * 3600  # the clock starts at 2026-03-15 12:00 UTC

    def test_a_day_counter_is_dropped_after_its_window_and_retention_not_before(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        end = self._day_end(clock)
        key = [KeyLimit(self.DAY, D("10"), until=end)]
        assert store.reserve("a", key, D("0.50"), 60).ok
        assert store.settle("a", D("0.40")).ok
        clock.now = end + self.RETENTION - 1
        assert store.status(self.DAY).spent == D("0.40")  # the window ended a day ago: still kept
        clock.now = end + self.RETENTION
        assert (store.status(self.DAY).spent, store.status(self.DAY).reserved) == (0, 0)

    def test_a_counter_with_a_hold_in_flight_is_kept_until_it_is_settled(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        end = self._day_end(clock)
        key = [KeyLimit(self.DAY, D("10"), until=end)]
        assert store.reserve("done", key, D("0.25"), 60).ok
        assert store.settle("done", D("0.25")).ok
        assert store.reserve("long", key, D("1"), 3 * 86400).ok  # a call that may take three days
        clock.now = end + self.RETENTION + 3600
        assert (store.status(self.DAY).spent, store.status(self.DAY).reserved) == (D("0.25"), D("1"))
        settled_at = clock.now
        assert store.settle("long", D("0.75")).ok
        assert store.status(self.DAY).spent == D("1.00")
        # touched by the settle: kept for the retention from then (a repeated settle stays exact)
        clock.now = settled_at + self.RETENTION - 1
        assert store.status(self.DAY).spent == D("1.00")
        clock.now = settled_at + self.RETENTION
        assert store.status(self.DAY).spent == 0

    def test_a_counter_with_a_hold_in_flight_is_kept_until_the_hold_expires(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        end = self._day_end(clock)
        key = [KeyLimit(self.DAY, D("10"), until=end)]
        assert store.reserve("crashed", key, D("0.6"), 2 * 86400).ok  # deadline: end + 36 h
        clock.now = end + self.RETENTION + 1
        assert (store.status(self.DAY).spent, store.status(self.DAY).reserved) == (0, D("0.6"))
        clock.now = end + 36 * 3600
        assert (store.status(self.DAY).spent, store.status(self.DAY).reserved) == (D("0.6"), 0)
        charged_at = clock.now
        clock.now = charged_at + self.RETENTION - 1
        assert store.status(self.DAY).spent == D("0.6")
        clock.now = charged_at + self.RETENTION
        assert store.status(self.DAY).spent == 0

    def test_a_late_settle_of_a_hold_made_at_the_windows_end_still_counts_exactly(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        end = self._day_end(clock)
        key = [KeyLimit(self.DAY, D("10"), until=end)]
        assert store.reserve("before", key, D("2"), 60).ok
        assert store.settle("before", D("2")).ok
        clock.now = end - 1
        assert store.reserve("last", key, D("0.5"), 300).ok  # one second before the day ends
        clock.now = end + 300
        assert store.status(self.DAY).spent == D("2.5")  # expired: charged its hold
        clock.now = end + 300 + self.RETENTION - 1  # past the day's end + retention, but the
        assert store.settle("last", D("0.8")).ok  # expired hold is remembered: its excess lands
        assert store.status(self.DAY).spent == D("2.8")

    def test_a_hold_taken_just_before_the_counter_is_dropped_keeps_it(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        end = self._day_end(clock)
        key = [KeyLimit(self.DAY, D("10"), until=end)]
        assert store.reserve("a", key, D("1"), 60).ok
        assert store.settle("a", D("1")).ok
        clock.now = end + self.RETENTION - 0.001  # a process whose clock lags a day behind
        assert store.reserve("lagging", key, D("0.5"), 120).ok
        clock.now = end + self.RETENTION + 60
        assert (store.status(self.DAY).spent, store.status(self.DAY).reserved) == (D("1"), D("0.5"))
        assert store.settle("lagging", D("0.5")).ok
        assert store.status(self.DAY).spent == D("1.5")

    def test_counters_without_a_window_end_are_never_dropped(
        self, store: BudgetStore, clock: FakeClock
    ) -> None:
        keys = [KeyLimit("run:r1", D("10")), KeyLimit("tenant:acme:rolling:604800", D("10"), 604800)]
        assert store.reserve("a", keys, D("0.5"), 60).ok
        assert store.settle("a", D("0.5")).ok
        clock.advance(3 * 86400)  # a rolling week keeps its spend by its own slices
        assert store.status("tenant:acme:rolling:604800", 604800).spent == D("0.5")
        clock.advance(400 * 86400)
        assert store.status("run:r1").spent == D("0.5")

    @pytest.mark.parametrize("until", [float("nan"), float("inf"), True, "2026-03-16", 0, -1])
    def test_a_bad_window_end_is_refused(self, store: BudgetStore, until: object) -> None:
        with pytest.raises(InvalidInput) as caught:
            store.reserve("a", [KeyLimit("k", D("1"), until=until)], D("0.1"), 60)  # type: ignore[arg-type]
        assert caught.value.field == "keys"
        assert store.status("k").reserved == 0

    def test_a_rolling_window_has_no_end_to_drop_it_at(self, store: BudgetStore, clock: FakeClock) -> None:
        with pytest.raises(InvalidInput, match="rolling") as caught:
            store.reserve("a", [KeyLimit("k", D("1"), 3600, until=clock.now + 60)], D("0.1"), 60)
        assert caught.value.field == "keys"

    # --- concurrency ----------------------------------------------------------------------------

    def test_threads_never_overshoot_when_actual_equals_estimate(self, store: BudgetStore) -> None:
        key = [KeyLimit("t", D("10"))]
        admitted: list[int] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            for index in range(30):
                rid = f"{n}-{index}"
                if store.reserve(rid, key, D("0.07"), 60).ok:
                    with lock:
                        admitted.append(1)
                    store.settle(rid, D("0.07"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        status = store.status("t")
        assert status.reserved == 0
        assert status.spent == D("0.07") * len(admitted)
        assert status.spent <= D("10")
        assert len(admitted) == 142  # floor(10 / 0.07): every cent the limit allows was used
