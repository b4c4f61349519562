"""The engine: several policies at once, hard/soft actions, downgrades, guards, throttling, plans."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from outlay._errors import BackendUnavailable, ConfigError, InvalidInput
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetExceeded,
    CostRateLimit,
    Decision,
    InMemoryBudgetStore,
    InMemoryDecisionSink,
    NotEntitled,
    Plans,
    RunGuards,
    RunStopped,
    Scope,
    Throttled,
    fingerprint,
)

from .conftest import FakeClock

D = Decimal
ACME = {"tenant": "acme", "feature": "search", "user": "u1"}


def engine_with(
    clock: FakeClock, sink: InMemoryDecisionSink, *policies: Budget, **kw: object
) -> BudgetEngine:
    return BudgetEngine(InMemoryBudgetStore(clock=clock), policies=policies, decision_sink=sink, **kw)  # type: ignore[arg-type]


def test_every_applicable_policy_must_admit_and_a_denial_holds_nothing(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    monthly = Budget(limit="100", scope="tenant", name="tenant-monthly")
    daily = Budget(limit="1.00", scope="feature", period="day", name="search-daily")
    other = Budget(limit="0.01", scope="tenant", key="globex")  # another tenant's: does not apply
    engine = engine_with(clock, sink, monthly, daily, other)
    engine.settle(engine.reserve(ACME, "0.90"))
    with pytest.raises(BudgetExceeded) as info:
        engine.reserve(ACME, "0.20")
    error = info.value
    assert (error.scope, error.budget, error.limit, error.spent, error.estimate) == (
        "feature",
        "search-daily",
        D("1.00"),
        D("0.90"),
        D("0.20"),
    )
    assert (
        str(error) == "feature search has spent $0.90 of its $1.00 daily budget; this call needs up to $0.20"
    )
    assert engine.status(ACME, monthly).reserved == 0  # nothing left held on the tenant counter
    assert engine.status(ACME, monthly).spent == D("0.90")
    [denied] = sink.of_kind("denied")
    assert (denied.tenant, denied.key, denied.budget) == ("acme", error.key, "search-daily")


def test_the_readable_sentence_of_the_issue(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink, Budget(limit="25.00", scope="tenant"))
    engine.settle(engine.reserve({"tenant": "acme"}, "24.80"))
    with pytest.raises(BudgetExceeded) as info:
        engine.reserve({"tenant": "acme"}, "0.40")
    assert str(info.value) == (
        "tenant acme has spent $24.80 of its $25.00 monthly budget; this call needs up to $0.40"
    )
    held = engine.reserve({"tenant": "acme"}, "0.15")
    with pytest.raises(BudgetExceeded, match=r"and \$0\.15 is held by calls in flight"):
        engine.reserve({"tenant": "acme"}, "0.10")
    engine.release(held)
    engine.reserve({"tenant": "acme"}, "0.10")


def test_tenants_are_isolated(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink, Budget(limit="1", scope="tenant"))
    engine.settle(engine.reserve({"tenant": "acme"}, "1"))
    engine.reserve({"tenant": "globex"}, "1")
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "acme"}, "0.01")


def test_settle_records_actual_beyond_estimate_and_unknown_as_estimate(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    budget = Budget(limit="10", scope="tenant")
    engine = engine_with(clock, sink, budget)
    first = engine.reserve(ACME, "0.10")
    assert engine.settle(first, "0.35") == D("0.35")
    assert engine.settle(first, "0.35") == 0  # a repeated settle never double counts
    assert engine.settle(engine.reserve(ACME, "0.20"), None) == D("0.20")
    assert engine.status(ACME, budget).spent == D("0.55")
    with pytest.raises(InvalidInput, match="actual"):
        engine.settle(engine.reserve(ACME, "0.1"), 0.1)
    with pytest.raises(InvalidInput, match="estimate"):
        engine.reserve(ACME, 0.1)


def test_explicit_budgets_and_currency(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink)
    request = Budget(limit="0.05", scope="request")
    engine.reserve({"request": "q1"}, "0.05", budgets=[request])
    with pytest.raises(BudgetExceeded, match="request q1"):
        engine.reserve({"request": "q1"}, "0.01", budgets=[request])
    with pytest.raises(InvalidInput, match="no request"):
        engine.reserve({"tenant": "a"}, "0.01", budgets=[request])
    eur = Budget(limit="1", scope="tenant", currency="EUR")
    with pytest.raises(InvalidInput, match="EUR"):
        engine.reserve({"tenant": "a"}, "0.01", budgets=[eur])


# --- soft limits and downgrades ------------------------------------------------------------------


def test_soft_limit_calls_back_once_and_downgrades_next_calls(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    seen: list[Decision] = []
    budget = Budget(
        limit="10",
        soft="8",
        scope="tenant",
        on_soft=seen.append,
        downgrade={"gpt-4o": "gpt-4o-mini", "claude-opus-*": "claude-haiku-*"},
    )
    engine = engine_with(clock, sink, budget)
    assert engine.model_for(ACME, "gpt-4o") == ("gpt-4o", False)
    engine.settle(engine.reserve(ACME, "7.99", model="gpt-4o"))
    assert seen == []
    engine.settle(engine.reserve(ACME, "0.01", model="gpt-4o"))  # reaches 8.00
    assert [d.kind for d in seen] == ["soft_exceeded"]
    engine.settle(engine.reserve(ACME, "0.5"))
    assert len(seen) == 1  # once per counter, not per call
    assert engine.model_for(ACME, "gpt-4o") == ("gpt-4o-mini", True)
    assert engine.model_for(ACME, "claude-opus-4-1") == ("claude-haiku-4-1", True)
    assert engine.model_for(ACME, "gemini-2.5-pro") == ("gemini-2.5-pro", False)
    assert engine.model_for({"tenant": "globex"}, "gpt-4o") == ("gpt-4o", False)  # other scope unaffected
    downgraded = sink.of_kind("downgraded")
    assert [(d.model, d.downgraded_to) for d in downgraded] == [
        ("gpt-4o", "gpt-4o-mini"),
        ("claude-opus-4-1", "claude-haiku-4-1"),
    ]
    assert sink.of_kind("soft_exceeded")[0].spent == D("7.99")


def test_a_downgrade_to_a_model_with_no_price_or_a_dearer_one_is_not_made(
    clock: FakeClock, sink: InMemoryDecisionSink, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget(soft="1", scope="tenant", downgrade={"gpt-4o": "gpt-4o-mnii", "gpt-4o-mini": "gpt-4o"})
    engine = engine_with(clock, sink, budget)
    engine.settle(engine.reserve(ACME, "1"))
    prices = {"gpt-4o": D("0.0125"), "gpt-4o-mini": D("0.00075"), "claude-x": None}
    for _ in range(2):
        assert engine.model_for(ACME, "gpt-4o", cost_of=prices.get) == ("gpt-4o", False)  # a typo
        assert engine.model_for(ACME, "gpt-4o-mini", cost_of=prices.get) == ("gpt-4o-mini", False)  # dearer
    refused = [r.getMessage() for r in caplog.records if "not downgrading" in r.getMessage()]
    assert len(refused) == 2  # once per pair
    assert "gpt-4o-mnii, which has no price" in refused[0] and "costs more" in refused[1]
    assert sink.of_kind("downgraded") == []
    # a model with no price may still go to a priced one: its spend becomes known
    unknown = Budget(soft="1", scope="tenant", downgrade={"claude-x": "gpt-4o-mini"})
    other = engine_with(clock, sink, unknown)
    other.settle(other.reserve(ACME, "1"))
    assert other.model_for(ACME, "claude-x", cost_of=prices.get) == ("gpt-4o-mini", True)


def test_an_on_soft_hook_that_raises_refuses_every_call_it_is_asked_about(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    asked: list[Decision] = []

    def escalate(decision: Decision) -> None:
        asked.append(decision)
        raise BudgetExceeded("over the soft limit: escalated", scope="tenant", key="acme", limit=D(1),
                             spent=decision.spent or D(0), reserved=D(0), estimate=D(0))  # fmt: skip

    engine = engine_with(clock, sink, Budget(soft="1", scope="tenant", on_soft=escalate))
    engine.settle(engine.reserve(ACME, "0.99"))
    for _ in range(3):
        with pytest.raises(BudgetExceeded, match="escalated"):
            engine.reserve(ACME, "0.05")
    assert len(asked) == 3
    assert engine.status(ACME, engine.policies[0]).reserved == 0  # every refused hold released


def test_soft_limit_crossed_by_an_overrunning_settle(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink, Budget(soft="1", scope="tenant"))
    engine.settle(engine.reserve(ACME, "0.10"), "1.50")
    [decision] = sink.of_kind("soft_exceeded")
    assert decision.spent == D("1.50")


def test_an_on_soft_hook_that_raises_escalates_and_holds_nothing(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    class NeedsReview(Exception):
        pass

    def escalate(decision: Decision) -> None:
        raise NeedsReview(decision.message)

    budget = Budget(soft="1", limit="5", scope="tenant", on_soft=escalate)
    engine = engine_with(clock, sink, budget)
    with pytest.raises(NeedsReview):
        engine.reserve(ACME, "2")
    assert engine.status(ACME, budget).reserved == 0


# --- runaway guards -------------------------------------------------------------------------------


def test_max_calls_stops_the_run_for_good(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink)
    engine.start_run("r1", budget=Budget(guards=RunGuards(max_calls=3)))
    scope = {"tenant": "acme", "run_id": "r1"}
    for _ in range(3):
        engine.settle(engine.reserve(scope, "0.01"))
    with pytest.raises(RunStopped) as info:
        engine.reserve(scope, "0.01")
    assert info.value.reason == "max_calls"
    with pytest.raises(RunStopped):
        engine.reserve(scope, "0")
    with pytest.raises(RunStopped):
        engine.check_run("r1")
    [stopped] = sink.of_kind("run_stopped")  # recorded once
    assert (stopped.run_id, stopped.reason) == ("r1", "max_calls")


class _SlowStore(InMemoryBudgetStore):
    """A store whose reserve takes a while (as a SQLite or Redis round trip does)."""

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)
        return super().reserve(*args, **kwargs)


def test_concurrent_calls_cannot_all_pass_a_runs_call_limit(sink: InMemoryDecisionSink) -> None:
    engine = BudgetEngine(_SlowStore(), policies=[Budget("100", scope="tenant")], decision_sink=sink)
    engine.start_run("r1", budget=Budget(guards=RunGuards(max_calls=3)))
    scope = {"tenant": "acme", "run_id": "r1"}
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        try:
            engine.reserve(scope, "0.01")
            outcomes.append("admitted")
        except RunStopped:
            outcomes.append("stopped")

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["admitted"] * 3 + ["stopped"] * 5


def test_a_refused_or_failed_reservation_uses_up_no_call_and_no_rate(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    class _Down(InMemoryBudgetStore):
        def reserve(self, *args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("budget store unreachable")

    tight = Budget("0.01", scope="tenant")
    engine = engine_with(clock, sink, tight, rate_limit=CostRateLimit("1", per=3600))
    engine.start_run("r1", budget=Budget(guards=RunGuards(max_calls=2)))
    scope = {"tenant": "acme", "run_id": "r1"}
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            engine.reserve(scope, "0.50")  # over the budget: not a call the run made
    engine.reserve(scope, "0.005")
    engine.reserve(scope, "0.005")
    with pytest.raises(RunStopped):
        engine.reserve(scope, "0")
    down = BudgetEngine(_Down(clock=clock), policies=[tight], rate_limit=CostRateLimit("1", per=3600))
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            down.reserve({"tenant": "acme"}, "0.40")  # nothing spent: the hour's $1 is untouched
    down.store = InMemoryBudgetStore(clock=clock)
    down.reserve({"tenant": "acme"}, "0.005")  # not throttled


def test_a_retry_storm_stops_the_run(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink, guards=RunGuards(max_identical_calls=3))
    engine.start_run("r1")
    scope = {"run_id": "r1"}
    same = fingerprint("gpt-4o", [{"role": "user", "content": "hi"}])
    assert same == fingerprint("gpt-4o", [{"content": "hi", "role": "user"}])
    for index in range(3):
        engine.settle(engine.reserve(scope, "0.01", fingerprint=same))
        engine.settle(engine.reserve(scope, "0.01", fingerprint=fingerprint("gpt-4o", index)))
    with pytest.raises(RunStopped, match="retry storm") as info:
        engine.reserve(scope, "0.01", fingerprint=same)
    assert info.value.reason == "retry_storm"


def test_guards_of_a_run_policy_stop_the_runs_it_applies_to(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    # docs/budgets.md: a budgets file's [[budget]] scope = "run" with max_calls = ... guards the runs.
    every = engine_with(clock, sink, Budget("1.00", scope="run", guards=RunGuards(max_calls=2)))
    every.start_run("r1")
    for _ in range(2):
        every.settle(every.reserve({"run_id": "r1"}, "0.01"))
    with pytest.raises(RunStopped) as info:
        every.reserve({"run_id": "r1"}, "0.01")
    assert info.value.reason == "max_calls"
    keyed = engine_with(clock, sink, Budget(scope="run", key="r2", guards=RunGuards(max_identical_calls=1)))
    same = fingerprint("gpt-4o", "again")
    for run_id in ("r2", "r3"):
        keyed.start_run(run_id)
        keyed.settle(keyed.reserve({"run_id": run_id}, "0.01", fingerprint=same))
    with pytest.raises(RunStopped, match="retry storm"):
        keyed.reserve({"run_id": "r2"}, "0.01", fingerprint=same)
    keyed.settle(keyed.reserve({"run_id": "r3"}, "0.01", fingerprint=same))  # the policy names r2 only


def test_guards_stop_a_run_this_process_did_not_open(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    # A gateway knows a run only by its X-Outlay-Run-Id header: the budgets file's run policy
    # limited its spend, yet its max_calls / max_identical_calls never stopped it.
    engine = engine_with(clock, sink, Budget("10", scope="run", guards=RunGuards(max_calls=2)))
    acme = Scope(tenant="acme", run="from-header")
    for _ in range(2):
        engine.settle(engine.reserve(acme, "0.01"))
    with pytest.raises(RunStopped) as info:
        engine.reserve(acme, "0.01")
    assert (info.value.reason, info.value.run_id) == ("max_calls", "from-header")
    # Another tenant naming the same run id has runs of its own: not counted, nor stopped.
    globex = Scope(tenant="globex", run="from-header")
    for _ in range(2):
        engine.settle(engine.reserve(globex, "0.01"))
    storms = engine_with(clock, sink, guards=RunGuards(max_identical_calls=1))
    scope = {"tenant": "acme", "run_id": "child", "parent_run_id": "parent"}
    storms.settle(storms.reserve(scope, "0.01", fingerprint="same"))
    with pytest.raises(RunStopped, match="retry storm"):
        storms.reserve(
            {"tenant": "acme", "run_id": "sibling", "parent_run_id": "parent"}, "0", fingerprint="same"
        )
    storms.settle(storms.reserve({"tenant": "acme", "run_id": "other"}, "0.01", fingerprint="same"))
    # A refused call is not one the run made.
    tight = engine_with(clock, sink, Budget("0.01", scope="run", guards=RunGuards(max_calls=1)))
    with pytest.raises(BudgetExceeded):
        tight.reserve(acme, "0.50")
    tight.settle(tight.reserve(acme, "0.01"))


def test_a_run_policys_limit_shows_in_the_runs_checkpoints(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    # A budgets file's run policy refused the call while run.check() and run.remaining said go on,
    # so an agent loop never stopped cleanly at its checkpoint.
    engine = engine_with(clock, sink, Budget("1.00", scope="run"))
    engine.start_run("r1", tenant="acme")
    engine.settle(engine.reserve({"tenant": "acme", "run_id": "r1"}, "0.99"))
    status = engine.run_status("r1")
    assert status is not None and status.remaining == Decimal("0.01")
    engine.check_run("r1", "0.01")  # exactly what is left: fine
    with pytest.raises(BudgetExceeded, match="spent"):
        engine.check_run("r1", "0.50")
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "acme", "run_id": "r1"}, "0.50")
    # Another tenant's run of the same id has its own counter, and its own checkpoint.
    engine.start_run("r1-globex", tenant="globex")
    engine.check_run("r1-globex", "0.50")


def test_a_rolling_soft_limit_is_announced_again_once_its_window_has_rolled(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    # Its counter key never changes: the first crossing was the only one ever announced, and an
    # escalating on_soft hook silently stopped working.
    told: list[object] = []
    soft = Budget(soft="1", scope="tenant", period="rolling:1h", on_soft=told.append)
    engine = engine_with(clock, sink, soft)
    for _ in range(3):
        engine.settle(engine.reserve({"tenant": "acme"}, "1.5"))
        engine.settle(engine.reserve({"tenant": "acme"}, "0.1"))  # within the hour: told already
        clock.advance(2 * 3600)  # the spend told of has left the window
    assert len(told) == 3
    assert [d.kind for d in sink.decisions] == ["soft_exceeded"] * 3


def test_cost_velocity_guard_uses_the_last_minute(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink)
    engine.start_run("fast", budget=Budget(guards=RunGuards(max_cost_per_minute="1.00")))
    engine.start_run("slow", budget=Budget(guards=RunGuards(max_cost_per_minute="1.00")))
    for _ in range(10):  # $0.90 spread over ten minutes: fine
        engine.settle(engine.reserve({"run_id": "slow"}, "0.09"))
        clock.advance(60)
    engine.settle(engine.reserve({"run_id": "fast"}, "0.60"))
    clock.advance(30)
    with pytest.raises(RunStopped, match="per minute") as info:
        engine.reserve({"run_id": "fast"}, "0.50")
    assert info.value.reason == "cost_velocity"


def test_cost_velocity_counts_the_calls_in_flight(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    # Only settled spend was counted: 20 calls in flight at once all passed a $0.50 per minute
    # guard, and the run spent $2.00 in its minute.
    engine = engine_with(clock, sink)
    engine.start_run("fan", budget=Budget(guards=RunGuards(max_cost_per_minute="0.50")))
    scope = {"tenant": "acme", "run_id": "fan"}
    held = [engine.reserve(scope, "0.10") for _ in range(5)]
    with pytest.raises(RunStopped, match=r"\$0.50 is held by calls in flight") as info:
        engine.reserve(scope, "0.10")
    assert info.value.reason == "cost_velocity"
    for hold in held:
        engine.settle(hold)
    assert engine.run_spent("fan") == D("0.50")
    # A settled or released call holds nothing more; a hold past its deadline (a crashed caller)
    # stops counting; a refused call never held anything.
    engine.start_run("loop", budget=Budget(guards=RunGuards(max_cost_per_minute="1.00")))
    loop = {"tenant": "acme", "run_id": "loop"}
    engine.release(engine.reserve(loop, "0.90"))
    engine.settle(engine.reserve(loop, "0.90"), "0.10")
    crashed = engine.reserve(loop, "0.80", ttl=5)
    clock.advance(6)
    engine.settle(engine.reserve(loop, "0.85"))
    clock.advance(61)
    budgeted = engine_with(clock, sink, Budget("0.10", scope="tenant"))
    budgeted.start_run("r", budget=Budget(guards=RunGuards(max_cost_per_minute="1.00")))
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            budgeted.reserve({"tenant": "acme", "run_id": "r"}, "0.40")
    budgeted.settle(budgeted.reserve({"tenant": "acme", "run_id": "r"}, "0.10"))
    assert engine.settle(crashed) == D("0.80")


def test_a_parent_runs_budget_covers_its_children(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink)
    engine.start_run("parent", budget=Budget(limit="1.00"))
    engine.start_run("child", parent_id="parent", budget=Budget(limit="5"))
    engine.start_run("grandchild", parent_id="child")
    engine.settle(engine.reserve({"run_id": "grandchild"}, "0.70"))
    with pytest.raises(BudgetExceeded, match=r"this run has spent \$0\.70 of its \$1\.00 budget"):
        engine.reserve({"run_id": "child"}, "0.40")
    assert engine.run_spent("parent") == engine.run_spent("child") == D("0.70")
    status = engine.run_status("parent")
    assert status is not None
    assert status.remaining == D("0.30")
    with pytest.raises(BudgetExceeded, match=r"needs up to \$0\.31"):
        engine.check_run("parent", "0.31")
    engine.check_run("parent", "0.30")
    # a child's checkpoint and remaining answer for the tightest budget over it, its parent's here
    for run_id in ("child", "grandchild"):
        tightest = engine.run_status(run_id)
        assert tightest is not None and tightest.remaining == D("0.30")
        with pytest.raises(BudgetExceeded, match=r"enclosing run parent has spent \$0\.70 of its \$1\.00"):
            engine.check_run(run_id, "0.31")
    engine.end_run("grandchild")
    assert engine.run_spent("grandchild") == D("0.70")  # still answers after the run ended
    with pytest.raises(InvalidInput, match="scope='run'"):
        engine.start_run("x", budget=Budget(limit="1", scope="tenant"))


# --- noisy neighbours -----------------------------------------------------------------------------


def test_token_bucket_throttles_with_retry_after(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(
        clock,
        sink,
        rate_limit=CostRateLimit(rate="1.00", per=60),
        rate_limits={"vip": CostRateLimit(rate="100", per=60)},
    )
    engine.settle(engine.reserve({"tenant": "acme"}, "0.80"))
    with pytest.raises(Throttled) as info:
        engine.reserve({"tenant": "acme"}, "0.50")
    # 0.20 left, 0.30 missing at $1/60s: 18 seconds
    assert info.value.retry_after == pytest.approx(18.0)
    assert info.value.tenant == "acme"
    [throttled] = sink.of_kind("throttled")
    assert throttled.retry_after == pytest.approx(18.0)
    engine.reserve({"tenant": "globex"}, "0.90")  # another tenant has its own bucket
    engine.reserve({"tenant": "vip"}, "50")
    clock.advance(18)
    engine.reserve({"tenant": "acme"}, "0.50")


def test_token_bucket_refunds_what_was_not_spent(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    budget = Budget(limit="0.50", scope="tenant")
    engine = engine_with(clock, sink, budget, rate_limit=CostRateLimit(rate="1"))  # the clock stands still
    a = {"tenant": "a"}
    engine.settle(engine.reserve(a, "0.40"), "0.05")  # bucket 1.00 - 0.05 spent = 0.95
    with pytest.raises(BudgetExceeded):
        engine.reserve(a, "0.90")  # the budget denies: the bucket gets its 0.90 back
    held = engine.reserve(a, "0.45")  # would be throttled had the denial kept its tokens
    engine.release(held)  # a failed call gives its tokens back too
    with pytest.raises(Throttled):
        engine.reserve(a, "0.96")
    engine.settle(engine.reserve(a, "0.45"))


def test_bad_rate_limits() -> None:
    with pytest.raises(InvalidInput, match="rate"):
        CostRateLimit(rate="0")
    with pytest.raises(InvalidInput, match="per"):
        CostRateLimit(rate="1", per=0)
    with pytest.raises(InvalidInput, match="per: expected a positive, finite"):
        CostRateLimit(rate="1", per=float("inf"))  # its bucket would never refill
    with pytest.raises(InvalidInput, match="rate"):
        CostRateLimit(rate=1.5)  # type: ignore[arg-type]


def test_an_engine_refuses_a_wrongly_typed_rate_limit_plans_or_guards() -> None:
    # Accepted, then an AttributeError in the first reserve of the tenant (or every reserve, for a
    # plans file's path given as plans=).
    for kwargs, field in [
        ({"rate_limit": "1.00"}, "rate_limit"),
        ({"rate_limits": {"vip": "100"}}, "rate_limits.vip"),
        ({"rate_limits": [("vip", CostRateLimit("1"))]}, "rate_limits"),
        ({"plans": "plans.toml"}, "plans"),
        ({"guards": {"max_calls": 3}}, "guards"),
        ({"decision_sink": "ledger"}, "decision_sink"),
    ]:
        with pytest.raises(InvalidInput) as info:
            BudgetEngine(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


# --- entitlements ---------------------------------------------------------------------------------


def test_entitlement_denial_is_raised_and_recorded(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    plans = Plans(["free", "pro", "enterprise"], {"acme": "enterprise", "globex": "pro"})
    engine = engine_with(clock, sink, plans=plans)
    engine.check_entitlement({"tenant": "acme"}, "enterprise")
    engine.check_entitlement({"tenant": "globex"}, "free")
    with pytest.raises(NotEntitled) as info:
        engine.check_entitlement({"tenant": "globex", "run_id": "r9"}, "enterprise")
    assert str(info.value) == "tenant globex is on the pro plan; this needs enterprise or above"
    assert (info.value.tier, info.value.requires) == ("pro", "enterprise")
    with pytest.raises(NotEntitled, match="has no plan"):
        engine.check_entitlement({"tenant": "stranger"}, "free")
    [first, _] = sink.of_kind("not_entitled")
    assert (first.tenant, first.run_id) == ("globex", "r9")
    with pytest.raises(InvalidInput, match="unknown tier"):
        engine.check_entitlement({"tenant": "acme"}, "platinum")
    with pytest.raises(ConfigError, match="plans file"):
        engine_with(clock, sink).check_entitlement({"tenant": "acme"}, "pro")


def test_decisions_are_complete_records(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink, Budget(limit="1", scope="tenant"))
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "acme", "run_id": "r1"}, "2", model="gpt-4o")
    [decision] = sink.decisions
    assert decision.time.timestamp() == clock.now
    assert decision.id[14] == "7"  # UUIDv7
    assert (decision.limit, decision.spent, decision.reserved, decision.estimate) == (D(1), D(0), D(0), D(2))
    assert (decision.model, decision.run_id, decision.scope) == ("gpt-4o", "r1", "tenant")
    with pytest.raises(ValueError, match="kind"):
        Decision(kind="shrug", message="x")


def test_a_failing_sink_does_not_change_the_decision(clock: FakeClock) -> None:
    def broken(decision: Decision) -> None:
        raise RuntimeError("ledger down")

    engine = BudgetEngine(
        InMemoryBudgetStore(clock=clock), policies=[Budget(limit="1", scope="tenant")], decision_sink=broken
    )
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "a"}, "2")


def test_calls_no_policy_covers_settle_once_too(clock: FakeClock, sink: InMemoryDecisionSink) -> None:
    engine = engine_with(clock, sink)
    engine.start_run("r1")  # a run with no budget: nothing is held in the store
    reservation = engine.reserve({"run_id": "r1"}, "0.20")
    assert reservation.keys == ()
    assert engine.settle(reservation, "0.25") == D("0.25")
    assert engine.settle(reservation, "0.25") == 0
    assert engine.release(reservation) is False
    assert engine.run_spent("r1") == D("0.25")
    failed = engine.reserve({"run_id": "r1"}, "0.20")
    assert engine.release(failed) is True
    assert engine.settle(failed) == 0  # a released call cannot be charged later
    assert engine.run_spent("r1") == D("0.25")


def test_budgets_of_another_scope_share_the_hold_all_or_nothing(
    clock: FakeClock, sink: InMemoryDecisionSink
) -> None:
    tenant = Budget(limit="10", scope="tenant", key="acme", name="key")
    per_feature = Budget(limit="1.00", scope="feature", key="acme/search", name="key (search)")
    engine = engine_with(clock, sink)
    also = [(Scope(feature="acme/search"), [per_feature])]
    hold = engine.reserve(ACME, "0.60", budgets=[tenant], also=also)
    assert {k.key.split(":")[0] for k in hold.keys} == {"tenant", "feature"}  # one hold, both counters
    engine.settle(hold, "0.70")
    feature_scope = Scope(feature="acme/search")
    assert engine.status(ACME, tenant).spent == D("0.70")
    assert engine.status(feature_scope, per_feature).spent == D("0.70")
    with pytest.raises(BudgetExceeded) as info:  # fits the tenant's 10, not the feature's 1.00
        engine.reserve(ACME, "0.40", budgets=[tenant], also=also)
    assert info.value.budget == "key (search)"
    assert engine.status(ACME, tenant).reserved == 0  # the refusal held nothing, anywhere
    assert engine.status(feature_scope, per_feature).reserved == 0
    with pytest.raises(InvalidInput, match="has no feature"):
        engine.reserve(ACME, "0.01", also=[(Scope(tenant="acme"), [per_feature])])
    with pytest.raises(InvalidInput, match="expected a Scope"):
        engine.reserve(ACME, "0.01", also=[({"feature": "acme/search"}, [per_feature])])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="expected a Budget"):
        engine.reserve(ACME, "0.01", also=[(feature_scope, ["1.00"])])  # type: ignore[list-item]
    assert engine.status(ACME, tenant).reserved == 0


@pytest.mark.parametrize("amount", ["1e-70", "0.1" + "0" * 60 + "1", "1e16"])
def test_an_amount_no_counter_can_hold_exactly_is_a_clear_error_that_changes_nothing(
    clock: FakeClock, sink: InMemoryDecisionSink, amount: str
) -> None:
    engine = engine_with(clock, sink, Budget("1", scope="tenant"))
    with pytest.raises(InvalidInput, match=r"estimate: (has more than 36 decimal places|must be below 10)"):
        engine.reserve(ACME, amount)
    held = engine.reserve(ACME, "0.1")
    with pytest.raises(InvalidInput, match="actual: "):
        engine.settle(held, amount)
    status = engine.status(ACME, engine.policies[0])
    assert (status.spent, status.reserved) == (0, D("0.1"))  # the hold stands, to be settled right
    assert engine.settle(held, "0.1") == D("0.1")
    with pytest.raises(InvalidInput, match="limit: "):
        Budget(amount, scope="tenant")


def test_a_downgrade_by_a_shared_budget_does_not_tell_its_spend(clock: FakeClock) -> None:
    # The shared counter holds every tenant's spend: acme's downgrade decision must not carry globex's.
    sink = InMemoryDecisionSink()
    cap = Budget(limit="10", soft="1", scope="feature", shared=True, downgrade={"gpt-4o": "gpt-4o-mini"})
    engine = engine_with(clock, sink, cap)
    engine.settle(engine.reserve(Scope(tenant="globex", feature="search"), "3.21"), "3.21")
    assert engine.model_for(Scope(tenant="acme", feature="search"), "gpt-4o") == ("gpt-4o-mini", True)
    (downgraded,) = [d for d in sink.decisions if d.kind == "downgraded"]
    assert downgraded.tenant == "acme"
    assert downgraded.spent is None and downgraded.reserved is None
    assert "3.21" not in downgraded.message


def test_a_soft_limit_given_per_call_is_announced_once_per_counter(clock: FakeClock) -> None:
    sink = InMemoryDecisionSink()
    hooked: list[Decision] = []
    engine = engine_with(clock, sink)
    kept: list[Budget] = []  # alive, so that no two of them share an id()
    for _ in range(4):
        daily = Budget(soft="0.10", scope="tenant", period="day", name="daily", on_soft=hooked.append)
        kept.append(daily)
        engine.settle(engine.reserve(Scope(tenant="acme"), "0.20", budgets=[daily]))
    assert [d.kind for d in sink.decisions] == ["soft_exceeded"]
    assert len(hooked) == 1
    # another soft limit on the same counter is its own announcement
    other = Budget(soft="0.50", scope="tenant", period="day", name="daily-high")
    engine.settle(engine.reserve(Scope(tenant="acme"), "0.20", budgets=[other]))
    assert [d.kind for d in sink.decisions] == ["soft_exceeded", "soft_exceeded"]


def test_threads_crossing_a_soft_limit_at_once_announce_it_once(clock: FakeClock) -> None:
    """'One soft_exceeded decision per counter and process': two threads over the soft limit at
    the same moment both found it unannounced, and its on_soft hook (an alert, say) ran twice."""
    sink = InMemoryDecisionSink()
    hooked: list[Decision] = []
    engine = engine_with(clock, sink, Budget(limit="10", soft="1", scope="tenant", on_soft=hooked.append))
    engine.settle(engine.reserve(ACME, "0.99"))

    class Slow(dict):  # type: ignore[type-arg]
        """The engine's memory of announced counters, slow to answer: the race made wide."""

        def get(self, key: Any, default: Any = None) -> Any:
            found = super().get(key, default)
            time.sleep(0.05)
            return found

        def popitem(self, last: bool = True) -> Any:
            return super().popitem()

    engine._soft_seen = Slow()  # type: ignore[assignment]
    start = threading.Barrier(4)

    def call() -> None:
        start.wait()
        engine.settle(engine.reserve(ACME, "0.02"))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [d.kind for d in sink.decisions] == ["soft_exceeded"]
    assert len(hooked) == 1


def test_the_engine_tells_the_store_when_each_calendar_counter_ends(clock: FakeClock) -> None:
    # The store drops a counter a retention after this end; the end is the calendar's, in the
    # policy's time zone (the clock is 2026-03-15 12:00 UTC).
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    engine = BudgetEngine(
        InMemoryBudgetStore(clock=clock),
        policies=[
            Budget(limit="10", scope="tenant", period="day"),
            Budget(limit="10", scope="feature", period="month", timezone="Pacific/Auckland"),
            Budget(limit="10", scope="user", period="hour"),
            Budget(limit="10", scope="workspace", period="rolling:1h"),
            Budget(limit="10", scope="request"),
        ],
    )
    scope = {"tenant": "acme", "feature": "search", "user": "u1", "workspace": "w", "request": "q1"}
    reservation = engine.reserve(scope, "0.10")
    ends = {kl.key: kl.until for kl in reservation.keys}
    assert ends == {
        "tenant:acme:day:2026-03-15": datetime(2026, 3, 16, tzinfo=UTC).timestamp(),
        "feature:acme:search:month:2026-03:Pacific/Auckland": datetime(
            2026, 4, 1, tzinfo=ZoneInfo("Pacific/Auckland")
        ).timestamp(),
        "user:acme:u1:hour:2026-03-15T12+0000": datetime(2026, 3, 15, 13, tzinfo=UTC).timestamp(),
        "workspace:acme:w:rolling:3600": None,  # a rolling window never ends
        "request:acme:q1": None,  # nor does a request's (its lifetime)
    }
    assert [p[2] for p in reservation.policies] == list(ends)  # (policy, scope key, counter)
    engine.settle(reservation, "0.10")


def test_yesterdays_counter_is_dropped_and_todays_spend_is_untouched(clock: FakeClock) -> None:
    store = InMemoryBudgetStore(clock=clock)
    engine = BudgetEngine(store, policies=[Budget(limit="1.00", scope="tenant", period="day")])
    engine.settle(engine.reserve({"tenant": "acme"}, "0.90"))
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "acme"}, "0.20")
    clock.advance(12 * 3600)  # a new day: a fresh counter
    engine.settle(engine.reserve({"tenant": "acme"}, "0.70"))
    clock.advance(86400)  # the first day ended a day ago: its counter is gone, today's is not
    today = Budget(limit="1.00", scope="tenant", period="day")
    assert engine.status({"tenant": "acme"}, today).spent == 0  # (a third day by now)
    assert store.status("tenant:acme:day:2026-03-15").spent == 0  # dropped: nothing to report
    assert store.status("tenant:acme:day:2026-03-16").spent == D("0.70")  # kept until tomorrow
    assert set(store._counters) == {"tenant:acme:day:2026-03-16"}
