"""Glue to ``outlay.context``: ``outlay.run(..., budget=..., requires=...)`` is enforced here.

A run listener checks the entitlement when a run opens (refusing it with NotEntitled) and tells the
default engine about the run, its parent and its budget, so calls made inside it (and inside its
child runs) reserve against that budget. The engine is looked up at each run, so
:func:`outlay.budgets.configure` may be called after import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from outlay._errors import InvalidInput

from ._default import get_engine
from ._policy import Budget

if TYPE_CHECKING:
    from outlay.context import CostContext, Run

__all__ = ["BudgetRunListener", "install", "uninstall"]


class BudgetRunListener:
    """The ``outlay.context`` run listener of the budgets package."""

    def on_run_start(self, run: Run, ctx: CostContext) -> None:
        budget = run.budget
        if budget is not None and not isinstance(budget, Budget):
            raise InvalidInput(f"expected an outlay.Budget, got {type(budget).__name__}", field="budget")
        engine = get_engine()
        if run.requires is not None:
            engine.check_entitlement(ctx, run.requires)
        engine.start_run(run.id, parent_id=run.parent_id, budget=budget, tenant=ctx.tenant)

    def on_run_end(self, run: Run, ctx: CostContext, exc: BaseException | None) -> None:
        get_engine().end_run(run.id, run)


_LISTENER = BudgetRunListener()


def install() -> bool:
    """Register the listener with ``outlay.context`` (idempotent). ``False`` if that package is absent."""
    try:
        from outlay.context import add_run_listener
    except ImportError:  # the context package is optional for code that only uses the engine
        return False
    add_run_listener(_LISTENER)
    return True


def uninstall() -> None:
    """Stop enforcing run budgets/entitlements (for tests of the context package in isolation)."""
    try:
        from outlay.context import remove_run_listener
    except ImportError:
        return
    remove_run_listener(_LISTENER)
