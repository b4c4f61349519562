"""``outlay.run(budget=..., requires=...)`` through the context package's run listener."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from decimal import Decimal

import pytest

from outlay import budgets
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetExceeded,
    InMemoryBudgetStore,
    InMemoryDecisionSink,
    NotEntitled,
    Plans,
    RunGuards,
    RunStopped,
)
from outlay.budgets._runs import ENDED_KEPT, RunBook

from .conftest import FakeClock

context = pytest.importorskip("outlay.context", reason="outlay.context (cost context package) is not present")
D = Decimal


@pytest.fixture
def engine(clock: FakeClock, sink: InMemoryDecisionSink) -> Iterator[BudgetEngine]:
    previous = budgets.get_engine()
    plans = Plans(["free", "pro", "enterprise"], {"acme": "enterprise", "globex": "pro"})
    engine = budgets.configure(
        BudgetEngine(
            InMemoryBudgetStore(clock=clock),
            policies=[Budget(limit="100", scope="tenant")],
            decision_sink=sink,
            plans=plans,
        )
    )
    yield engine
    budgets.configure(previous)


def test_a_runs_budget_is_enforced_for_calls_inside_it(engine: BudgetEngine) -> None:
    with (
        context.attribute(tenant="acme"),
        context.run("agent", budget=Budget(limit="0.50", soft="0.40")) as run,
    ):
        budgets.settle(budgets.reserve(context.current(), "0.30"))
        with context.run("tool-step", kind="tool"):
            budgets.settle(budgets.reserve(context.current(), "0.15"), "0.12")
        assert budgets.run_spent(run) == D("0.42")
        assert budgets.run_remaining(run) == D("0.08")
        assert budgets.run_remaining() == D("0.08")  # the current run
        with pytest.raises(BudgetExceeded, match=r"this run has spent \$0\.42 of its \$0\.50 budget"):
            budgets.reserve(context.current(), "0.10")
        budgets.check_run(run)
        with pytest.raises(BudgetExceeded):
            budgets.check_run(run, "0.09")
    assert budgets.run_spent(run) == D("0.42")  # after the run closed


async def test_a_task_started_in_a_budgeted_run_stays_under_its_budget_after_the_block(
    engine: BudgetEngine,
) -> None:
    release = asyncio.Event()
    spent: list[str] = []

    async def background() -> None:  # started inside the run, spends after its `with` has ended
        await release.wait()
        for _ in range(5):
            budgets.settle(budgets.reserve(context.current(), "0.04"))
            spent.append("0.04")

    with context.attribute(tenant="acme"), context.run("agent", budget=Budget(limit="0.10")) as run:
        task = asyncio.create_task(background())
    release.set()
    with pytest.raises(BudgetExceeded, match=r"this run has spent \$0\.08 of its \$0\.10 budget"):
        await task
    assert spent == ["0.04", "0.04"] and budgets.run_spent(run) == D("0.08")


async def test_a_busy_process_does_not_forget_a_run_whose_task_still_spends(engine: BudgetEngine) -> None:
    # The engine kept the last 10,000 ended runs only: once as many other runs had come and gone,
    # the task (or a child run still open) of a budgeted run spent without limit.
    release = asyncio.Event()
    refused: list[str] = []

    async def background(step: bool) -> None:
        with context.run("step") if step else contextlib.nullcontext():
            await release.wait()
            for _ in range(3):
                try:
                    budgets.settle(budgets.reserve(context.current(), "0.04"))
                except BudgetExceeded as exc:
                    refused.append(exc.message)

    with context.attribute(tenant="acme"), context.run("agent", budget=Budget(limit="0.10")) as run:
        tasks = [asyncio.create_task(background(step=False)), asyncio.create_task(background(step=True))]
        await asyncio.sleep(0)  # the child run opens, and outlives its parent's block
    for _ in range(ENDED_KEPT + 1):  # other requests' runs
        with context.run("other"):
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert budgets.run_spent(run) == D("0.08")  # two calls of the six: the run's and its child's
    assert len(refused) == 4


def test_an_ended_run_nothing_holds_any_more_is_let_go() -> None:
    # Held while its Run object lives; once it is gone, it joins the bounded window of ended runs
    # (at the next run's start: the finalizer itself takes no lock), so memory stays bounded.
    book = RunBook()

    class Handle:  # stands for a Run object
        pass

    handles = [Handle() for _ in range(3)]
    for index, handle in enumerate(handles):
        book.start(f"r{index}", None, None)
        book.end(f"r{index}", handle)
    assert len(book._held) == 3
    del handles, handle
    gc.collect()
    book.start("next", None, None)
    assert book._held == {} and sorted(book._ended) == ["r0", "r1", "r2"]
    assert book.get("r1") is not None  # still answers, as one of the last ENDED_KEPT


def test_run_guards_through_outlay_run(engine: BudgetEngine) -> None:
    with context.run("loop", budget=Budget(guards=RunGuards(max_calls=2))) as run:
        for _ in range(2):
            budgets.settle(budgets.reserve(context.current(), "0.01"))
        with pytest.raises(RunStopped):
            budgets.reserve(context.current(), "0.01")
        with pytest.raises(RunStopped):
            budgets.check_run(run)


def test_requires_refuses_a_lower_tier(engine: BudgetEngine, sink: InMemoryDecisionSink) -> None:
    with context.attribute(tenant="acme"), context.run("premium-research", requires="enterprise"):
        pass
    with (
        pytest.raises(NotEntitled, match="globex is on the pro plan"),
        context.attribute(tenant="globex"),
        context.run("premium-research", requires="enterprise"),
    ):
        pytest.fail("the body of a refused run must not run")
    [decision] = sink.of_kind("not_entitled")
    assert decision.tenant == "globex"


def test_a_run_budget_must_be_a_budget(engine: BudgetEngine) -> None:
    with (
        pytest.raises(
            budgets.InvalidInput if hasattr(budgets, "InvalidInput") else ValueError, match="budget"
        ),
        context.run("agent", budget="0.50"),
    ):
        pass


def test_uninstall_and_install(engine: BudgetEngine) -> None:
    budgets.uninstall()
    try:
        with context.run("free-for-all", budget=Budget(limit="0")):
            budgets.reserve(context.current(), "1")  # no run budget applies: nothing enforced it
    finally:
        assert budgets.install()
    with pytest.raises(BudgetExceeded), context.run("enforced", budget=Budget(limit="0")):
        budgets.reserve(context.current(), "1")
