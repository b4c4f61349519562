"""A month of a multi-tenant agent platform, recorded through a real :class:`outlay.Outlay`.

Order of play (all sizes from ``Random(seed)``, all times on February 2026):

1. ``runs`` customer runs shared among the tenants by plan weight (each tenant at least one);
2. a free-plan run stuck in a re-planning loop, stopped by its run budget;
3. weekly digests through a queue hop; nightly evals and a weekly re-index with no tenant;
4. the power user's deep-research runs, until its spend is ``power_ratio`` times the median tenant's
   (the median counted with the power user in it, as the concentration report counts it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from random import Random
from typing import Final

from rich.progress import Progress, TaskID

from outlay import budgets
from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT
from outlay._runtime import Outlay

from ._jobs import WEEKS, nightly_evals, weekly_digests, weekly_reindex
from ._platform import DAYS, START, Clock, Platform
from ._tenants import Tenant, roster
from ._workflows import customer_run, deep_research_run, runaway_run

__all__ = ["DemoConfig", "Simulation", "median_with_top", "simulate"]

_MAX_POWER_RUNS: Final = 10_000  # a guard: every deep-research run costs something, so this is never hit


@dataclass(frozen=True, slots=True)
class DemoConfig:
    seed: int = 7
    tenants: int = 8
    runs: int = 160
    #: The power user's spend as a multiple of the median tenant's.
    power_ratio: int = 40

    def __post_init__(self) -> None:
        for name in ("tenants", "runs", "power_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"must be a positive integer, got {value!r}", field=name)
        roster(self.tenants)  # at least MIN_TENANTS
        if self.runs < self.tenants:
            raise InvalidInput(
                f"need at least one run per tenant ({self.tenants}), got {self.runs}", field="runs"
            )


@dataclass(frozen=True, slots=True)
class Simulation:
    """What was recorded: counts and the exact sum of the recorded events' costs, per tenant too."""

    config: DemoConfig
    tenants: tuple[Tenant, ...]
    events: int
    unpriced_events: int
    recorded_cost: Decimal
    spend: dict[str | None, Decimal]
    root_runs: tuple[str, ...]
    decisions: int
    runaway_calls: int
    digests: int
    power_runs: int


def median_with_top(others: list[Decimal]) -> Decimal:
    """The median of ``others`` plus one tenant above them all (whose exact spend does not matter)."""
    ordered = sorted(others)
    count = len(ordered) + 1
    middle = count // 2  # never the top one for count >= 3
    if count % 2:
        return ordered[middle]
    return MONEY_CONTEXT.divide(MONEY_CONTEXT.add(ordered[middle - 1], ordered[middle]), Decimal(2))


def _schedule(tenants: list[Tenant], runs: int, rng: Random) -> list[Tenant]:
    order = list(tenants) + rng.choices(tenants, [t.weight for t in tenants], k=runs - len(tenants))
    rng.shuffle(order)
    return order


class _Steps:
    """Progress reporting that works with or without a rich progress bar."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def task(self, description: str, total: int | None) -> Callable[[], None]:
        if self.progress is None:
            return lambda: None
        progress = self.progress
        task: TaskID = progress.add_task(description, total=total)
        return lambda: progress.advance(task)

    def percent(self, description: str) -> Callable[[Decimal, Decimal], None]:
        if self.progress is None:
            return lambda _done, _target: None
        progress = self.progress
        task = progress.add_task(description, total=100)
        # A display percentage, not money: integer arithmetic on the exact amounts.
        return lambda done, target: progress.update(task, completed=min(100, int(done * 100 / target)))


def simulate(outlay: Outlay, config: DemoConfig, progress: Progress | None = None) -> Simulation:
    """Run the whole month through ``outlay``; everything is durable (flushed) on return."""
    rng = Random(config.seed)
    tenants = roster(config.tenants)
    platform = Platform(outlay)
    steps = _Steps(progress)
    previous = budgets.get_engine()
    # A private engine: the run budgets of this simulation never mix with the process's own.
    budgets.configure(budgets.BudgetEngine(decision_sink=platform.on_decision))
    try:
        advance = steps.task("customer agent runs", config.runs)
        counts: dict[str, int] = {}
        for tenant in _schedule(tenants, config.runs, rng):
            index = counts[tenant.name] = counts.get(tenant.name, -1) + 1
            customer_run(platform, tenant, index, rng)
            advance()
        free = next(t for t in tenants if t.plan == "free")
        runaway_calls = runaway_run(platform, free, rng)

        paying = [t for t in tenants if t.plan != "free"]
        digests = weekly_digests(
            platform, tenants, rng, steps.task("weekly digests (queue hop)", WEEKS * len(paying))
        )
        nightly_evals(platform, rng, steps.task("nightly evals (no tenant)", DAYS))
        weekly_reindex(platform, rng, steps.task("weekly re-index (no tenant)", WEEKS))

        power = next((t for t in tenants if t.power_user), tenants[1])
        others = [platform.tenant_spend(t.name) for t in tenants if t is not power]
        target = MONEY_CONTEXT.multiply(median_with_top(others), Decimal(config.power_ratio))
        show = steps.percent(f"{power.name}: deep research to {config.power_ratio}x the median")
        power_runs = 0
        while platform.tenant_spend(power.name) < target and power_runs < _MAX_POWER_RUNS:
            deep_research_run(platform, power, rng)
            power_runs += 1
            show(platform.tenant_spend(power.name), target)
    finally:
        budgets.configure(previous)
        platform.record_decisions(Clock(START, rng))  # anything the engine decided outside a call
    outlay.flush()
    return Simulation(
        config=config,
        tenants=tuple(tenants),
        events=platform.events,
        unpriced_events=platform.unpriced_events,
        recorded_cost=platform.recorded_cost,
        spend=dict(platform.spend),
        root_runs=tuple(platform.root_runs),
        decisions=len(platform.decisions),
        runaway_calls=runaway_calls,
        digests=digests,
        power_runs=power_runs,
    )
