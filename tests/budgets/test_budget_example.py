"""The example agent returns a partial result when its run budget runs out."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

from outlay import budgets

pytest.importorskip("outlay.context", reason="the example uses outlay.run (cost context package)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "budgeted_agent.py"


@pytest.fixture
def example() -> Iterator[ModuleType]:
    previous = budgets.get_engine()
    spec = importlib.util.spec_from_file_location("budgeted_agent", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        budgets.configure(previous)


def test_partial_result_when_the_run_budget_runs_out(example: ModuleType) -> None:
    sink = budgets.InMemoryDecisionSink()
    budgets.configure(budgets.BudgetEngine(decision_sink=sink))
    questions = [f"question {n}" for n in range(50)]
    result = example.research(questions, limit="0.02")
    assert not result.complete
    assert 0 < len(result.answers) < len(questions)
    assert result.spent <= Decimal("0.02")
    assert "this run has spent" in result.stopped_because
    # the soft limit switched the agent to the cheaper model before the money ran out
    assert result.answers[0].startswith("[big-model]")
    assert result.answers[-1].startswith("[small-model]")
    assert {d.kind for d in sink.decisions} >= {"soft_exceeded", "downgraded"}


def test_a_large_enough_budget_completes(example: ModuleType) -> None:
    budgets.configure(budgets.BudgetEngine())
    result = example.research(["one", "two"], limit="1")
    assert result.complete
    assert len(result.answers) == 2
    assert result.stopped_because is None


def test_the_example_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("partial result:")
