"""The agent workflows tenants run: an orchestrator run that spawns sub-agent runs, each making calls.

The run tree (``outlay.run`` nested in ``outlay.attribute``) is the same shape a real agent framework
produces: the orchestrator plans, a retriever embeds and queries the knowledge base, a specialist
works with tools, a writer answers, and enterprise output passes a compliance check on the
self-hosted model. Free-plan runs carry a run :class:`outlay.Budget`.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Final, NamedTuple

import outlay
from outlay.budgets import Budget, BudgetExceeded

from ._platform import DAYS, Calls, Clock, Platform
from ._tenants import FEATURES, Tenant

__all__ = ["FREE_RUN_BUDGET", "customer_run", "deep_research_run", "runaway_run"]


class PlanModels(NamedTuple):
    planner: str
    worker: str
    reasoner: str
    writer: str


_MODELS: Final = {
    "free": PlanModels("gpt-4o-mini", "gemini-2.5-flash", "gpt-4o", "gpt-4o-mini"),
    "pro": PlanModels("gpt-4o", "gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"),
    "enterprise": PlanModels("o3", "gemini-2.5-pro", "o3", "claude-sonnet-4-5"),
}


def free_run_budget() -> Budget:
    """Free-plan runs are capped; past the soft limit the expensive models are swapped for cheap ones."""
    return Budget(
        limit="0.25",
        soft="0.15",
        name="free-plan-run",
        downgrade={"gpt-4o": "gpt-4o-mini", "claude-sonnet-4-5": "gemini-2.5-flash"},
    )


def _describe(budget: Budget) -> str:
    swaps = ", ".join(f"{a} -> {b}" for a, b in (budget.downgrade or {}).items())
    return f"{budget.name}: ${budget.limit} per run, soft ${budget.soft} ({swaps})"


FREE_RUN_BUDGET: Final = _describe(free_run_budget())


# -- specialists: the sub-agent that does a feature's actual work ---------------------------------


def _triage(calls: Calls, models: PlanModels) -> None:
    rng = calls.rng
    with outlay.run("triage-agent", kind="agent"):
        for _ in range(rng.randint(1, 3)):
            calls.tool("crm-lookup", rng.randint(1, 3))
            calls.llm(models.worker, prompt=rng.randint(2_000, 8_000), output=rng.randint(150, 600))


def _answer(calls: Calls, models: PlanModels) -> None:
    rng = calls.rng
    with outlay.run("answerer", kind="agent"):
        for _ in range(rng.randint(1, 2)):
            calls.llm(models.worker, prompt=rng.randint(4_000, 14_000), output=rng.randint(300, 900))


def _research(calls: Calls, models: PlanModels) -> None:
    rng = calls.rng
    with outlay.run("researcher", kind="agent"):
        for _ in range(rng.randint(2, 5)):
            calls.tool("web-search", rng.randint(1, 4))
            calls.llm(models.reasoner, prompt=rng.randint(6_000, 20_000), output=rng.randint(600, 2_000))


def _review_code(calls: Calls, models: PlanModels) -> None:
    rng = calls.rng
    with outlay.run("code-reviewer", kind="agent"):
        for _ in range(rng.randint(2, 4)):
            calls.llm("claude-sonnet-4-5", prompt=rng.randint(20_000, 60_000), output=rng.randint(800, 2_500))
            calls.tool("code-sandbox", rng.randint(1, 3))


def _extract_clauses(calls: Calls, models: PlanModels) -> None:
    rng = calls.rng
    with outlay.run("clause-extractor", kind="agent"):
        for _ in range(rng.randint(2, 4)):
            calls.llm("legal-ft-v2", prompt=rng.randint(8_000, 30_000), output=rng.randint(500, 1_500))


_SPECIALISTS: Final[dict[str, Callable[[Calls, PlanModels], None]]] = {
    "support-bot": _triage,
    "doc-search": _answer,
    "research": _research,
    "code-review": _review_code,
    "contract-review": _extract_clauses,
}


def _feature(tenant: Tenant, index: int, rng: Random) -> str:
    # The fine-tune tenant reviews contracts on every third run (its first included, so the unpriced
    # model always shows up); everything else follows the plan's feature mix.
    if tenant.fine_tune and index % 3 == 0:
        return "contract-review"
    names = [name for name, _ in FEATURES[tenant.plan]]
    weights = [weight for _, weight in FEATURES[tenant.plan]]
    return rng.choices(names, weights)[0]


def customer_run(platform: Platform, tenant: Tenant, index: int, rng: Random) -> None:
    """One user request of ``tenant`` (its ``index``-th run): a whole orchestrated agent run."""
    feature = _feature(tenant, index, rng)
    models = _MODELS[tenant.plan]
    free = tenant.plan == "free"
    calls = Calls(platform, rng, Clock.on_day(rng.randrange(DAYS), rng), admission=free)
    user = f"u-{rng.randint(1, 40):02d}"
    with (
        outlay.attribute(tenant=tenant.name, user=user, feature=feature, plan=tenant.plan),
        outlay.run(
            f"{feature}-orchestrator", kind="agent", budget=free_run_budget() if free else None
        ) as root,
    ):
        platform.root_runs.append(root.id)
        try:
            calls.llm(models.planner, prompt=rng.randint(1_500, 6_000), output=rng.randint(200, 800))
            with outlay.run("retriever", kind="retrieval"):
                texts = rng.randint(4, 16)
                calls.embed(texts, texts * rng.randint(300, 800))
                calls.retrieve(rng.randint(3, 10))
            _SPECIALISTS[feature](calls, models)
            with outlay.run("writer", kind="agent"):
                calls.llm(models.writer, prompt=rng.randint(4_000, 12_000), output=rng.randint(500, 1_500))
            if tenant.plan == "enterprise":
                with outlay.run("compliance-check", kind="agent"):
                    calls.self_hosted(prompt=rng.randint(2_000, 8_000), output=rng.randint(100, 400))
        except BudgetExceeded:
            pass  # the free-plan cap stopped the run: the user gets a partial answer, not a bill


def runaway_run(platform: Platform, tenant: Tenant, rng: Random) -> int:
    """A re-planning loop whose context grows every turn, stopped by its run budget. Returns the
    number of LLM calls it made before the budget refused the next one."""
    calls = Calls(platform, rng, Clock.on_day(DAYS // 2, rng, hour=3), admission=True)
    made = 0
    with (
        outlay.attribute(tenant=tenant.name, user="u-13", feature="research", plan=tenant.plan),
        outlay.run("research-orchestrator", kind="agent", budget=free_run_budget()) as root,
    ):
        platform.root_runs.append(root.id)
        context = 6_000
        with outlay.run("replanner", kind="agent"):
            try:
                for _ in range(500):  # the bug: "plan again" never converges
                    calls.llm("gpt-4o", prompt=context, output=rng.randint(600, 1_200))
                    made += 1
                    calls.tool("web-search")
                    context += rng.randint(1_500, 3_000)
            except BudgetExceeded:
                pass
    return made


def deep_research_run(platform: Platform, tenant: Tenant, rng: Random) -> None:
    """The power user's workload: deep research fanning out to many researchers over long contexts."""
    calls = Calls(platform, rng, Clock.on_day(rng.randrange(DAYS), rng))
    with (
        outlay.attribute(tenant=tenant.name, user=f"u-{rng.randint(1, 5):02d}", feature="deep-research",
                         plan=tenant.plan),
        outlay.run("deep-research-orchestrator", kind="agent") as root,
    ):  # fmt: skip
        platform.root_runs.append(root.id)
        calls.llm("o3", prompt=rng.randint(8_000, 20_000), output=rng.randint(2_000, 6_000))
        for _ in range(rng.randint(4, 7)):
            with outlay.run("researcher", kind="agent"):
                for _ in range(rng.randint(2, 4)):
                    calls.tool("web-search", rng.randint(2, 6))
                    calls.llm(
                        "claude-sonnet-4-5",
                        prompt=rng.randint(40_000, 150_000),
                        output=rng.randint(1_500, 4_000),
                    )
                with outlay.run("summarizer", kind="agent"):
                    calls.llm(
                        "gemini-2.5-flash", prompt=rng.randint(20_000, 60_000), output=rng.randint(800, 2_000)
                    )
        with outlay.run("writer", kind="agent"):
            calls.llm("o3", prompt=rng.randint(30_000, 80_000), output=rng.randint(4_000, 10_000))
