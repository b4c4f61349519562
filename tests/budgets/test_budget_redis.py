"""The Redis budget store on the real Redis of this machine: conformance, replicas, expiry on the
server clock, Redis unreachable (fail closed / fail open + reconcile), and money precision."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay._money import MONEY_CONTEXT
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetExceeded,
    InMemoryBudgetStore,
    KeyLimit,
    RedisBudgetStore,
    SQLiteBudgetStore,
    open_budget_store,
)

from .conformance import BudgetStoreConformance, Factory
from .conftest import FakeClock
from .redis_helpers import TcpProxy, closed_port

D = Decimal
MakeStore = Callable[..., RedisBudgetStore]


@pytest.fixture
def prefix() -> str:
    # a hash tag keeps one test's keys in one slot; the uuid keeps tests apart
    return f"outlay-test:{{{uuid.uuid4().hex}}}:"


@pytest.fixture
def make(redis_url: str, prefix: str) -> Iterator[MakeStore]:
    """Stores on the real Redis under this test's own prefix; every key is deleted afterwards."""
    stores: list[RedisBudgetStore] = []

    def factory(url: str = redis_url, **options: Any) -> RedisBudgetStore:
        options.setdefault("prefix", prefix)
        store = RedisBudgetStore(url, **options)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()
    cleaner = RedisBudgetStore(redis_url, prefix=prefix)
    cleaner.clear()
    cleaner.close()


class TestRedisStore(BudgetStoreConformance):
    @pytest.fixture
    def make_store(self, make: MakeStore) -> Factory:
        return lambda clock: make(clock=clock)


# --- replicas and the server clock ---------------------------------------------------------------


def test_replicas_share_counters_and_settle_each_others_calls(make: MakeStore) -> None:
    first, second = make(), make()
    key = [KeyLimit("tenant:acme", D("1"))]
    assert first.reserve("a", key, D("0.75"), 60).ok
    denied = second.reserve("b", key, D("0.5"), 60)
    assert not denied.ok
    assert denied.statuses[0].reserved == D("0.75")
    assert second.settle("a", D("0.7")).ok  # settled by another replica than the one that reserved
    assert first.status("tenant:acme") == second.status("tenant:acme")
    assert first.status("tenant:acme").spent == D("0.7")


def _poll(condition: Callable[[], bool], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_holds_expire_on_the_redis_server_clock(make: MakeStore) -> None:
    store, other = make(), make()  # no injected clock: deadlines come from Redis TIME
    key = [KeyLimit("k", D("1"))]
    assert store.reserve("crashed", key, D("1"), 1.0).ok
    assert not other.reserve("b", key, D("0.1"), 60).ok  # held for every replica meanwhile
    assert _poll(lambda: other.status("k").reserved == 0), "the 1 s hold never expired"
    assert other.status("k").spent == D("1")  # charged: the crashed call may have been billed
    assert store.settle("crashed", D("1.2")).ok  # a late settle adds what it cost beyond the hold
    assert (other.status("k").spent, other.status("k").reserved) == (D("1.2"), 0)


def _crash_after_reserving(url: str, prefix: str) -> None:
    store = RedisBudgetStore(url, prefix=prefix)
    store.reserve("crashed-call", [KeyLimit("tenant:acme", D("1"))], D("1"), 1.0)
    os._exit(3)  # dies mid-call: never settles, never releases


@pytest.mark.slow
def test_a_crashed_replicas_hold_expires(make: MakeStore, redis_url: str, prefix: str) -> None:
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_crash_after_reserving, args=(redis_url, prefix)
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 3
    store = make()
    assert store.status("tenant:acme").reserved in (D(0), D(1))  # held unless already past 1 s
    assert _poll(lambda: store.status("tenant:acme").reserved == 0)
    assert store.status("tenant:acme").spent == D("1")  # charged, not dropped
    assert not store.reserve("after", [KeyLimit("tenant:acme", D("1"))], D("0.5"), 60).ok


def test_a_retried_call_after_a_lost_reply_holds_once(make: MakeStore, prefix: str) -> None:
    store = make()
    hold = prefix + "h:r"
    args = [prefix, "", "r", "0.4", "60000", "60000", "nonce-1", '[["k", "1", 0]]']
    first = store._reserve(keys=[prefix + "expiry", hold], args=args, client=store._client)
    again = store._reserve(keys=[prefix + "expiry", hold], args=args, client=store._client)
    assert first[0] == again[0] == "ok"
    assert store.status("k").reserved == D("0.4")
    with pytest.raises(InvalidInput, match="already exists"):  # a different call with that id
        store.reserve("r", [KeyLimit("k", D("1"))], D("0.4"), 60)


# --- Redis unreachable ---------------------------------------------------------------------------


def test_fail_closed_refuses_and_holds_nothing(make: MakeStore) -> None:
    store = make(f"redis://127.0.0.1:{closed_port()}/0", on_unavailable="deny")
    with pytest.raises(BackendUnavailable, match="on_unavailable='deny'") as caught:
        store.reserve("a", [KeyLimit("k", D("1"))], D("0.1"), 60)
    assert isinstance(caught.value, BackendError)
    assert isinstance(caught.value.__cause__, BackendUnavailable)  # which names the Redis error
    with pytest.raises(BackendUnavailable, match="unknown"):
        store.status("k")
    engine = BudgetEngine(store, policies=[Budget(limit="5", scope="tenant")])
    with pytest.raises(BackendUnavailable):  # the gateway answers 503 backend_unavailable
        engine.reserve({"tenant": "acme"}, "0.10")


@pytest.mark.parametrize(
    "url", ["redis://outlay:S3cretPw@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0?password=S3cretPw"]
)
def test_an_unreachable_redis_is_named_without_its_password(
    make: MakeStore, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The message reaches the log and, as the gateway's 503 body, every caller.
    store = make(url.format(port=closed_port()), on_unavailable="deny")
    with caplog.at_level("WARNING"), pytest.raises(BackendUnavailable) as caught:
        store.reserve("a", [KeyLimit("k", D("1"))], D("0.1"), 60)
    told = [str(caught.value), str(caught.value.__cause__), *(r.getMessage() for r in caplog.records)]
    with pytest.raises(BackendUnavailable) as status:
        store.status("k")
    told.append(str(status.value))
    assert all("S3cretPw" not in line for line in told), told
    assert "***" in str(caught.value) and "127.0.0.1" in str(caught.value)  # still says which Redis


def test_fail_open_without_a_local_cap_is_a_configuration_error(make: MakeStore) -> None:
    with pytest.raises(
        ConfigError, match=r"local_cap: on_unavailable=allow .* cap of 0 it would deny them all"
    ):
        make(f"redis://127.0.0.1:{closed_port()}/0", on_unavailable="allow")


def test_fail_open_admits_up_to_the_local_cap(make: MakeStore) -> None:
    store = make(f"redis://127.0.0.1:{closed_port()}/0", on_unavailable="allow", local_cap="1.00")
    key = [KeyLimit("k", D("0.01"))]  # the shared limit cannot be checked: only the cap applies
    for index in range(3):
        assert store.reserve(f"r{index}", key, D("0.30"), 60).ok
    assert store.local_spend == D("0.90")
    with pytest.raises(BackendUnavailable, match=r"allowance of \$1 is used up \(\$0.9 admitted"):
        store.reserve("r3", key, D("0.30"), 60)
    assert store.settle("r0", D("0.10")).ok  # cost less than estimated: 0.20 of the cap comes back
    assert store.release("r1") is True
    assert store.local_spend == D("0.40")  # r0's 0.10 spent + r2's 0.30 held, not yet in Redis
    assert store.reserve("r4", key, D("0.60"), 60).ok
    with pytest.raises(BackendUnavailable):
        store.reserve("r5", key, D("0.000001"), 60)
    with pytest.raises(InvalidInput, match="already exists"):
        store.reserve("r4", key, D("0.01"), 60)


def test_fail_open_reconciles_when_redis_returns(make: MakeStore, redis_url: str) -> None:
    with TcpProxy(6379) as proxy:
        flaky = make(f"redis://127.0.0.1:{proxy.port}/0", on_unavailable="allow", local_cap="1",
                     retry_interval=0)  # fmt: skip
        observer = make()
        key = [KeyLimit("tenant:acme", D("10"))]
        assert flaky.reserve("before", key, D("0.50"), 60).statuses  # held in Redis
        proxy.stop()
        local = flaky.reserve("during", key, D("0.30"), 60)
        assert local.ok
        assert local.statuses == ()  # admitted un-checked: no counter status is known
        assert flaky.settle("before", D("0.40")).ok  # queued: Redis is down
        assert flaky.settle("during", D("0.25")).ok
        assert flaky.settle("during", D("0.25")).ok is False  # recorded once, even queued
        assert flaky.pending == 2
        assert flaky.local_spend == D("0.25")
        seen = flaky.status("tenant:acme")  # fail open: the last status seen + what is local
        assert (seen.spent, seen.reserved) == (D("0.25"), D("0.5"))
        assert (observer.status("tenant:acme").spent, observer.status("tenant:acme").reserved) == (
            D(0),
            D("0.5"),
        )
        proxy.start()
        assert flaky.status("tenant:acme").spent == D("0.65")  # the first call back replays the queue
        assert flaky.pending == 0
        assert flaky.local_spend == 0
        assert (observer.status("tenant:acme").spent, observer.status("tenant:acme").reserved) == (
            D("0.65"),
            D(0),
        )
        assert observer.settle("during", D("0.25")).ok is False  # reconciled like any settled call


def test_fail_closed_recovers_and_applies_queued_settles(make: MakeStore) -> None:
    with TcpProxy(6379) as proxy:
        store = make(f"redis://127.0.0.1:{proxy.port}/0", on_unavailable="deny", retry_interval=0)
        key = [KeyLimit("k", D("1"))]
        assert store.reserve("a", key, D("0.5"), 60).ok
        proxy.stop()
        with pytest.raises(BackendUnavailable):
            store.reserve("b", key, D("0.1"), 60)
        assert store.settle("a", D("0.5")).ok  # the call already happened: its cost is kept
        assert store.pending == 2  # and b's release, in case its reserve ran (a lost reply)
        proxy.start()
        assert store.reserve("c", key, D("0.5"), 60).ok  # after the queued settle: 0.5 + 0.5 <= 1
        assert not store.reserve("d", key, D("0.01"), 60).ok
        assert store.status("k").spent == D("0.5")


def test_a_refused_reserve_whose_reply_was_lost_holds_nothing(make: MakeStore) -> None:
    """Redis ran the reserve but its reply never came (a timeout: Redis paused, a network stall):
    the call was refused (503), so its hold must not stay, nor be charged when it expires."""
    with TcpProxy(6379) as proxy:
        store = make(f"redis://127.0.0.1:{proxy.port}/0", on_unavailable="deny", timeout=0.3,
                     retry_interval=0)  # fmt: skip
        observer = make()
        key = [KeyLimit("tenant:acme", D("1"))]
        assert store.status("tenant:acme").reserved == 0  # connected, scripts loaded
        proxy.mute_replies = True
        with pytest.raises(BackendUnavailable, match="on_unavailable='deny'"):
            store.reserve("lost", key, D("0.6"), 1.0)
        assert _poll(lambda: observer.status("tenant:acme").reserved == D("0.6"))  # it did run
        proxy.mute_replies = False
        proxy.stop()  # the muted connections are dead; new ones answer
        proxy.start()
        assert store.reserve("next", key, D("0.9"), 60).ok  # the refused call's hold was taken back
        assert store.pending == 0
        time.sleep(1.1)  # past the lost hold's deadline: nothing is charged for it
        status = observer.status("tenant:acme")
        assert (status.spent, status.reserved) == (D(0), D("0.9"))
        assert store.settle("next", D("0.9")).ok
        assert observer.status("tenant:acme").spent == D("0.9")


def test_backoff_skips_redis_after_a_failure(make: MakeStore) -> None:
    store = make(f"redis://127.0.0.1:{closed_port()}/0", on_unavailable="deny", retry_interval=60)
    with pytest.raises(BackendUnavailable) as first:
        store.reserve("a", [KeyLimit("k")], D("1"), 60)
    assert first.value.__cause__ is not None  # the connection error
    with pytest.raises(BackendUnavailable) as second:
        store.reserve("b", [KeyLimit("k")], D("1"), 60)
    assert second.value.__cause__ is None  # not tried again within retry_interval


# --- precision -----------------------------------------------------------------------------------


def test_forty_decimal_places_are_exact_and_forty_one_are_refused(make: MakeStore) -> None:
    store = make()
    finest = D("1E-40")
    for index in range(3):
        assert store.reserve(f"r{index}", [KeyLimit("k", D("1"))], finest, 60).ok
        store.settle(f"r{index}", finest)
    assert store.status("k").spent == D("3E-40")
    with pytest.raises(InvalidInput, match="41 decimal places") as caught:
        store.reserve("x", [KeyLimit("k")], D("1E-41"), 60)
    assert caught.value.field == "amount"
    with pytest.raises(InvalidInput) as caught:
        store.reserve("y", [KeyLimit("k", D("0.12345678901234567890123456789012345678901"))], D(1), 60)
    assert caught.value.field == "keys"
    store.reserve("z", [KeyLimit("k")], D(1), 60)
    with pytest.raises(InvalidInput) as caught:
        store.settle("z", D("1E-41"))
    assert caught.value.field == "actual"
    assert store.status("k").reserved == D(1)  # the refused calls held nothing


def test_largest_amounts_stay_exact_far_past_double_precision(make: MakeStore) -> None:
    store = make()
    largest = D("999999999999999." + "9" * 40)  # 55 significant digits
    assert store.reserve("a", [KeyLimit("k")], largest, 60).ok
    store.settle("a", largest)
    assert store.reserve("b", [KeyLimit("k")], largest, 60).ok
    store.settle("b", largest)
    assert store.status("k").spent == MONEY_CONTEXT.multiply(largest, 2)  # 56 digits, all exact
    with pytest.raises(InvalidInput, match="too large"):
        store.reserve("c", [KeyLimit("k")], D("1E15"), 60)


def test_admission_compares_exactly_at_the_limit(make: MakeStore) -> None:
    store = make()
    key = [KeyLimit("k", D("0.3"))]
    assert store.reserve("a", key, D("0.1"), 60).ok
    assert store.reserve("b", key, D("0.2"), 60).ok  # 0.1 + 0.2 == 0.3 (not 0.30000000000000004)
    assert not store.reserve("c", key, D("1E-40"), 60).ok
    carry = [KeyLimit("carry", D("1"))]
    assert store.reserve("d", carry, D("0.99999999999999"), 60).ok  # 14 nines: one full chunk
    assert store.reserve("e", carry, D("0.00000000000001"), 60).ok
    assert store.status("carry").reserved == D(1)


_amounts = st.decimals(min_value=0, max_value=D("999999999999999"), places=40, allow_nan=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_amounts, min_size=1, max_size=4), _amounts)
def test_redis_arithmetic_matches_decimal(make: MakeStore, amounts: list[Decimal], limit: Decimal) -> None:
    store = make()
    key = f"k-{uuid.uuid4().hex}"
    spent = D(0)
    for index, amount in enumerate(amounts):
        result = store.reserve(f"{key}-{index}", [KeyLimit(key, limit)], amount, 60)
        assert result.ok == (MONEY_CONTEXT.add(spent, amount) <= limit)
        if result.ok:
            exponent = amount.as_tuple().exponent
            halved = isinstance(exponent, int) and exponent >= -39
            actual = MONEY_CONTEXT.multiply(amount, D("0.5")) if halved else amount
            store.settle(f"{key}-{index}", actual)
            spent = MONEY_CONTEXT.add(spent, actual)
        assert store.status(key) == store.status(key)
        assert (store.status(key).spent, store.status(key).reserved) == (spent, D(0))


# --- bad input and configuration -----------------------------------------------------------------


def test_bad_input_names_the_field(make: MakeStore) -> None:
    store = make()
    for ttl in (-1, float("nan"), "60"):
        with pytest.raises(InvalidInput) as caught:
            store.reserve("a", [KeyLimit("k")], D(1), ttl)  # type: ignore[arg-type]
        assert caught.value.field == "ttl"
    with pytest.raises(InvalidInput) as caught:
        store.reserve("a", [KeyLimit("k", D(1), 0)], D(1), 60)
    assert caught.value.field == "keys"
    with pytest.raises(InvalidInput) as caught:
        store.reserve("a", [KeyLimit("k", D(-1))], D(1), 60)
    assert caught.value.field == "keys"
    with pytest.raises(InvalidInput) as caught:
        make(on_unavailable="maybe")
    assert caught.value.field == "on_unavailable"
    with pytest.raises(InvalidInput) as caught:
        make(local_cap=0.5)
    assert caught.value.field == "local_cap"
    with pytest.raises(ConfigError) as caught:
        RedisBudgetStore("http://127.0.0.1:6379")
    assert caught.value.field == "url"


def test_open_budget_store_selects_by_url(
    make: MakeStore, redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OUTLAY_BUDGET_URL", f"{redis_url}?prefix={prefix}&on_unavailable=allow&local_cap=2.50"
    )
    store = open_budget_store()
    assert isinstance(store, RedisBudgetStore)
    assert store.on_unavailable == "allow"
    assert store.reserve("a", [KeyLimit("k", D(1))], D("0.5"), 60).ok
    assert make().status("k").reserved == D("0.5")  # the same prefix: the same counters
    store.close()
    assert isinstance(open_budget_store("memory://"), InMemoryBudgetStore)
    sqlite = open_budget_store(f"sqlite:{tmp_path / 'b.db'}")
    assert isinstance(sqlite, SQLiteBudgetStore)
    sqlite.close()
    with pytest.raises(ConfigError, match="unsupported") as caught:
        open_budget_store("postgresql://x/y")
    assert caught.value.field == "budget_store"
    with pytest.raises(ConfigError) as caught:
        open_budget_store(f"{redis_url}?on_unavailable=sometimes")
    assert caught.value.field == "on_unavailable"


def test_a_misspelt_url_option_is_a_config_error_when_the_store_opens(redis_url: str, prefix: str) -> None:
    # It reached redis-py, which raised a bare TypeError on every reserve (the gateway's 500), and
    # meanwhile the store ran in the mode the option was meant to change.
    for url in (
        f"{redis_url}?prefix={prefix}&on_unavailble=allow&local_cap=5",
        f"{redis_url}?prefix={prefix}&max_connections=4&tiemout=2",
    ):
        with pytest.raises(ConfigError, match=r"on_unavailble|tiemout") as caught:
            open_budget_store(url)
        assert caught.value.field == "url"
        assert "on_unavailable" in str(caught.value)  # the options outlay reads are named
    with pytest.raises(ConfigError, match="colour") as caught:
        RedisBudgetStore(f"{redis_url}?colour=blue", prefix=prefix)
    # redis-py's own options still go through
    store = open_budget_store(f"{redis_url}?prefix={prefix}&health_check_interval=10&client_name=outlay")
    assert store.reserve("a", [KeyLimit("k", D(1))], D("0.5"), 60).ok
    store.clear()
    store.close()


# --- three gateway replicas (real processes) against one hard limit -------------------------------

LIMIT = D("10.00")
CALLERS = 64  # threads per replica


def _three_replicas(redis_url: str, prefix: str, estimate: str, actual: str, use_engine: bool) -> list[Any]:
    import multiprocessing

    from .redis_helpers import replica

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=replica, args=(redis_url, prefix, estimate, actual, CALLERS, use_engine, start, out)
        )
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=90) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert len({pid for pid, _ in results}) == 3
    return [admitted for _, admitted in results]


@pytest.mark.slow
def test_three_replicas_never_overshoot_when_actual_equals_estimate(
    make: MakeStore, redis_url: str, prefix: str
) -> None:
    per_replica = _three_replicas(redis_url, prefix, "0.03", "0.03", use_engine=True)
    status = make().status(f"tenant:acme:month:{time.strftime('%Y-%m', time.gmtime())}")
    total = sum((D(cost) for admitted in per_replica for cost, _ in admitted), D(0))
    assert status.spent == total  # every settle of every replica counted, once
    assert status.reserved == 0
    assert total == D("9.99")  # floor(10 / 0.03) calls: never over the limit, and all of it usable
    assert all(per_replica), "a replica was starved for the whole run"
    print(f"3 replicas x {CALLERS} threads: {[len(a) for a in per_replica]} calls, spent {total} of {LIMIT}")


@pytest.mark.slow
def test_three_replicas_overshoot_is_bounded_by_calls_in_flight(
    make: MakeStore, redis_url: str, prefix: str
) -> None:
    estimate, actual = D("0.10"), D("0.13")  # every call costs 30% more than its estimate
    per_replica = _three_replicas(redis_url, prefix, str(estimate), str(actual), use_engine=False)
    admitted = [(D(cost), D(held)) for calls in per_replica for cost, held in calls]
    status = make().status("tenant:acme")
    assert status.spent == sum(cost for cost, _ in admitted)
    assert status.reserved == 0
    # After the last admission (spent + held <= limit), only the calls then in flight settle; each
    # adds its overrun. The most calls ever in flight at an admission bounds that, exactly.
    most_in_flight = max(held for _, held in admitted) / estimate
    bound = LIMIT + most_in_flight * (actual - estimate)
    overshoot = status.spent - LIMIT
    assert status.spent <= bound, f"overshoot {overshoot} beyond {most_in_flight} calls in flight"
    assert most_in_flight <= 3 * CALLERS  # each caller has at most one call in flight
    print(f"3 replicas: spent {status.spent} of {LIMIT}, overshoot {overshoot}, "
          f"bound {bound - LIMIT} ({most_in_flight} in flight at most)")  # fmt: skip


async def test_64_asyncio_tasks_on_one_replica_never_overshoot(make: MakeStore) -> None:
    import asyncio

    engine = BudgetEngine(make(), policies=[Budget(limit=LIMIT, scope="tenant", key="acme")])
    spent: list[Decimal] = []

    async def task() -> None:
        while True:
            try:
                reservation = engine.reserve({"tenant": "acme"}, "0.07")
            except BudgetExceeded:
                return
            await asyncio.sleep(0)  # the provider call: every other task runs meanwhile
            spent.append(engine.settle(reservation, "0.07"))

    await asyncio.gather(*(task() for _ in range(64)))
    status = engine.status({"tenant": "acme"}, engine.policies[0])
    assert status.spent == sum(spent) == D("0.07") * 142  # floor(10 / 0.07) calls, never over
    assert status.reserved == 0


def test_a_settle_or_release_made_in_time_but_queued_past_the_deadline_is_exact(make: MakeStore) -> None:
    # The replica lost Redis, settled one call at 0.10 and released another on time; the queue
    # reached Redis only after the holds' deadline, by when they had been charged 1.00 each: the
    # counter read 2.00 for 0.10 of spend.
    clock = FakeClock(1_000_000.0)
    with TcpProxy(6379) as proxy:
        replica = make(f"redis://127.0.0.1:{proxy.port}/0", retry_interval=0, clock=clock)
        observer = make(clock=clock)
        key = [KeyLimit("tenant:acme", D("10"))]
        rolling = [KeyLimit("tenant:acme:hour", D("10"), 3600)]
        assert replica.reserve("settled", key + rolling, D("1.00"), 2).ok
        assert replica.reserve("released", key + rolling, D("1.00"), 2).ok
        assert replica.reserve("crashed", key, D("1.00"), 2).ok  # its caller never comes back
        proxy.stop()
        assert replica.settle("settled", D("0.10")).ok  # queued, in time
        assert replica.release("released")  # queued, in time
        clock.advance(3)  # the outage outlasts the holds
        assert observer.status("tenant:acme").spent == D("3.00")  # all three charged at expiry
        proxy.start()
        assert replica.flush() == 0
        assert (observer.status("tenant:acme").spent, observer.status("tenant:acme").reserved) == (
            D("1.10"), 0)  # fmt: skip
        assert observer.status("tenant:acme:hour", 3600).spent == D("0.10")
    # A settle that arrives late without having been queued (the caller was late) adds the excess.
    assert observer.reserve("late", key, D("0.50"), 2).ok
    clock.advance(3)
    assert observer.settle("late", D("0.70")).ok
    assert observer.status("tenant:acme").spent == D("1.80")


# --- Redis lost the holds (a restart without persistence, a failover to an empty replica) --------


def test_a_call_in_flight_when_redis_lost_its_hold_is_still_charged(make: MakeStore) -> None:
    store, other = make(), make()
    key = [KeyLimit("tenant:acme", D("1")), KeyLimit("feature:acme:chat", D("1"), 3600)]
    assert store.reserve("a", key, D("0.4"), 60).ok
    assert store.reserve("b", key, D("0.3"), 60).ok
    assert other.reserve("c", key, D("0.2"), 60).ok
    store.clear()  # Redis restarted empty: the holds and the counters are gone
    assert store.settle("a", D("0.25")).ok  # the call was made: its cost counts, not dropped
    assert store.settle("a", D("0.25")).ok is False  # and only once
    assert store.release("b") is True  # nothing held any more: released, not an error
    for name, window in (("tenant:acme", None), ("feature:acme:chat", 3600)):
        status = other.status(name, window)
        assert (status.spent, status.reserved) == (D("0.25"), D(0))
    with pytest.raises(InvalidInput, match="unknown"):  # another replica's hold: keys not known here
        store.settle("c", D("0.2"))


def test_a_settle_queued_in_an_outage_counts_after_a_restart_without_persistence(make: MakeStore) -> None:
    with TcpProxy(6379) as proxy:
        store = make(f"redis://127.0.0.1:{proxy.port}/0", on_unavailable="deny", retry_interval=0)
        observer = make()
        key = [KeyLimit("tenant:acme", D("1"))]
        assert store.reserve("a", key, D("0.5"), 60).ok
        assert store.reserve("b", key, D("0.5"), 60).ok
        proxy.stop()
        assert store.settle("a", D("0.4")).ok  # queued
        assert store.settle("b", None).ok  # queued: charges the estimate
        observer.clear()  # Redis comes back empty
        proxy.start()
        assert store.flush() == 0
        status = observer.status("tenant:acme")
        assert (status.spent, status.reserved) == (D("0.9"), D(0))
        assert not store.reserve("c", key, D("0.2"), 60).ok  # the limit still counts those calls


def test_a_bounded_connection_pool_waits_for_a_connection_not_an_outage(
    make: MakeStore, redis_url: str
) -> None:
    """``max_connections`` in the URL (passed to redis-py): more callers than connections wait for
    one, as for Redis itself; a busy pool was taken for Redis being down (refused, then backed off)."""
    import threading

    store = make(redis_url + "?max_connections=1", retry_interval=60)
    key = [KeyLimit("tenant:acme", D("1000"))]
    failures: list[BaseException] = []

    def caller(number: int) -> None:
        for index in range(50):
            try:
                assert store.reserve(f"{number}-{index}", key, D("1"), 60).ok
                store.settle(f"{number}-{index}", D("0.5"))
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    status = store.status("tenant:acme")
    assert (status.spent, status.reserved) == (D("150"), D(0))


@pytest.mark.parametrize("url", ["redis:/127.0.0.1:6379/0", "redis:127.0.0.1:6379", "rediss//cache:6380/0"])
def test_a_mistyped_redis_url_is_refused_not_made_a_local_sqlite_store(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken as a path, OUTLAY_BUDGET_URL=redis:/host gave each host a SQLite store of its own:
    # replicas on other hosts no longer shared the counters, so each could spend the whole limit.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="neither a URL") as caught:
        open_budget_store(url)
    assert caught.value.field == "budget_store"
    assert list(tmp_path.iterdir()) == []


# --- counters of ended calendar windows expire in Redis itself -------------------------------------


def test_a_day_counter_expires_in_redis_after_its_window_and_retention(
    make: MakeStore, redis_url: str, prefix: str
) -> None:
    # On the server's clock Redis itself deletes the key: nobody has to read it again.
    import redis

    client = redis.Redis.from_url(redis_url)
    store = make(retention=0.5)
    counter = prefix + "c:tenant:acme:day:today"
    end = time.time() + 0.5
    key = [KeyLimit("tenant:acme:day:today", D("10"), until=end)]
    assert store.reserve("a", key, D("1"), 60).ok
    assert client.pttl(counter) == -1  # held on: no expiry at all
    assert store.settle("a", D("0.75")).ok
    assert 0 < client.pttl(counter) <= 1000  # the window's end + retention, from now
    assert store.status("tenant:acme:day:today").spent == D("0.75")
    assert _poll(lambda: client.exists(counter) == 0, within=5)
    assert time.time() >= end + 0.5 - 0.05  # (not before: allowing for the two clocks' rounding)
    client.close()


def test_a_counter_held_on_does_not_expire_in_redis_until_the_hold_is_finished(
    make: MakeStore, redis_url: str, prefix: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    store = make(retention=0.2)
    counter = prefix + "c:tenant:acme:day:today"
    key = [KeyLimit("tenant:acme:day:today", D("10"), until=time.time() + 0.1)]
    assert store.reserve("spent", key, D("0.5"), 60).ok
    assert store.settle("spent", D("0.5")).ok
    assert store.reserve("long", key, D("1"), 60).ok  # taken before the expiry: it is removed
    time.sleep(0.6)  # well past the window's end + retention
    assert client.pttl(counter) == -1
    status = store.status("tenant:acme:day:today")
    assert (status.spent, status.reserved) == (D("0.5"), D("1"))
    assert store.release("long")
    assert 0 < client.pttl(counter) <= 200  # free again: dropped a retention after this change
    assert _poll(lambda: client.exists(counter) == 0, within=5)
    client.close()


def test_counters_without_a_window_end_never_expire_in_redis(
    make: MakeStore, redis_url: str, prefix: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    store = make(retention=0)
    store.reserve("a", [KeyLimit("run:r1", D("10"))], D("1"), 60)
    store.settle("a", D("1"))
    assert client.pttl(prefix + "c:run:r1") == -1
    # a key a caller counted both ways is kept: a reservation without an end makes it permanent
    day = [KeyLimit("tenant:acme:day:today", None, until=time.time() + 0.1)]
    assert store.reserve("b", day, D("1"), 60).ok
    assert store.settle("b", D("1")).ok
    assert client.pttl(prefix + "c:tenant:acme:day:today") > 0
    assert store.reserve("c", [KeyLimit("tenant:acme:day:today")], D("1"), 60).ok
    assert store.settle("c", D("1")).ok
    assert client.pttl(prefix + "c:tenant:acme:day:today") == -1
    time.sleep(0.3)
    assert store.status("tenant:acme:day:today").spent == D("2")
    client.close()


def test_an_injected_clock_sets_the_expiry_from_its_own_time(
    make: MakeStore, redis_url: str, prefix: str, clock: FakeClock
) -> None:
    # Redis expires keys on its own clock: the expiry is the time left by the store's clock.
    import redis

    client = redis.Redis.from_url(redis_url)
    store = make(clock=clock)
    key = [KeyLimit("tenant:acme:day:2026-03-15", D("10"), until=clock.now + 12 * 3600)]
    assert store.reserve("a", key, D("1"), 60).ok
    assert store.settle("a", D("1")).ok
    left = client.pttl(prefix + "c:tenant:acme:day:2026-03-15")
    assert (12 + 24) * 3600 * 1000 - 5000 < left <= (12 + 24) * 3600 * 1000
    client.close()
