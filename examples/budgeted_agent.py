"""A research agent with a run budget that returns a partial result when the budget runs out.

Run it: ``python examples/budgeted_agent.py``. The "LLM" is a stand-in with a fixed, illustrative
price so the example runs offline; swap ``fake_llm`` for a real provider call. The budget pattern is
the real one:

1. before each billable call, reserve an estimate (input tokens + ``max_tokens`` at the price);
2. after it, settle the actual cost (the rest of the reservation is released);
3. between steps, ``check_run`` is a cooperative checkpoint; on ``BudgetExceeded`` the agent stops
   cleanly and returns what it has so far instead of crashing or overspending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import outlay.context as oc
from outlay import budgets

# Illustrative prices, USD per token (not a real model's).
INPUT_PRICE = Decimal("0.000003")
OUTPUT_PRICE = Decimal("0.000015")
MAX_TOKENS = 400


@dataclass
class ResearchResult:
    answers: list[str] = field(default_factory=list)
    complete: bool = False
    stopped_because: str | None = None
    spent: Decimal = Decimal(0)


def estimate(prompt: str, max_tokens: int = MAX_TOKENS) -> Decimal:
    """Upper bound of one call's cost: every input token plus the most output it may produce."""
    input_tokens = len(prompt.split()) * 2  # rough, on the safe side
    return input_tokens * INPUT_PRICE + max_tokens * OUTPUT_PRICE


def fake_llm(model: str, prompt: str) -> tuple[str, Decimal]:
    """A deterministic stand-in for a provider call: an answer and its exact cost."""
    output_tokens = 150 + 10 * (len(prompt) % 7)
    cost = len(prompt.split()) * 2 * INPUT_PRICE + output_tokens * OUTPUT_PRICE
    return f"[{model}] notes on: {prompt}", cost


def research(questions: list[str], *, tenant: str = "acme", limit: str = "0.02") -> ResearchResult:
    result = ResearchResult()
    with (
        oc.attribute(tenant=tenant, feature="research"),
        oc.run(
            "research-agent",
            budget=budgets.Budget(
                limit=limit, soft=Decimal(limit) / 2, downgrade={"big-model": "small-model"}
            ),
        ) as run,
    ):
        try:
            for question in questions:
                prompt = f"Research this question and cite sources: {question}"
                budgets.check_run(run, need=estimate(prompt))  # stop before a step we cannot pay for
                ctx = oc.current()
                model, _ = budgets.model_for(ctx, "big-model")  # cheaper once the soft limit is reached
                reservation = budgets.reserve(ctx, estimate(prompt), model=model)
                try:
                    answer, cost = fake_llm(model, prompt)
                except Exception:
                    budgets.release(reservation)
                    raise
                budgets.settle(reservation, cost)
                result.answers.append(answer)
            result.complete = True
        except budgets.BudgetExceeded as exc:
            result.stopped_because = str(exc)
        result.spent = budgets.run_spent(run)
    return result


def main() -> ResearchResult:
    sink = budgets.InMemoryDecisionSink()
    budgets.configure(budgets.BudgetEngine(decision_sink=sink))
    questions = [f"question {n}: what changed in the market in quarter {n}?" for n in range(1, 21)]
    result = research(questions)
    state = "complete" if result.complete else "partial"
    print(f"{state} result: {len(result.answers)} of {len(questions)} questions, spent ${result.spent}")
    if result.stopped_because:
        print(f"stopped: {result.stopped_because}")
    for decision in sink.decisions:
        print(f"decision {decision.kind}: {decision.message}")
    return result


if __name__ == "__main__":
    main()
