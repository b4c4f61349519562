"""Runtime budgets and guardrails: enforced while an agent runs, not observed after.

Reserve an estimate before a billable call, settle the actual cost after it; hard limits refuse,
soft limits record a decision and may downgrade the model; runaway guards stop runs; a per-tenant
cost rate throttles noisy neighbours; plans gate runs by tier. See docs/budgets.md.
"""

from outlay._errors import BudgetError, BudgetExceeded, NotEntitled, RunStopped, Throttled

from ._config import load_policies
from ._decision import DECISION_KINDS, Decision, DecisionSink, InMemoryDecisionSink
from ._default import (
    check_run,
    configure,
    get_engine,
    model_for,
    release,
    reserve,
    run_remaining,
    run_spent,
    settle,
    status,
)
from ._downgrade import DowngradeMap
from ._engine import BudgetEngine, BudgetStatus, Reservation
from ._guards import CostRateLimit, RunGuards, fingerprint
from ._integration import BudgetRunListener, install, uninstall
from ._open import open_budget_store
from ._plans import Plans, load_plans
from ._policy import PERIODS, SCOPES, Budget, Scope
from ._redis import RedisBudgetStore
from ._sqlite import SQLiteBudgetStore
from ._store import BudgetStore, InMemoryBudgetStore, KeyLimit, KeyStatus, StoreResult

__all__ = [
    "DECISION_KINDS",
    "PERIODS",
    "SCOPES",
    "Budget",
    "BudgetEngine",
    "BudgetError",
    "BudgetExceeded",
    "BudgetRunListener",
    "BudgetStatus",
    "BudgetStore",
    "CostRateLimit",
    "Decision",
    "DecisionSink",
    "DowngradeMap",
    "InMemoryBudgetStore",
    "InMemoryDecisionSink",
    "KeyLimit",
    "KeyStatus",
    "NotEntitled",
    "Plans",
    "RedisBudgetStore",
    "Reservation",
    "RunGuards",
    "RunStopped",
    "SQLiteBudgetStore",
    "Scope",
    "StoreResult",
    "Throttled",
    "check_run",
    "configure",
    "fingerprint",
    "get_engine",
    "install",
    "load_plans",
    "load_policies",
    "model_for",
    "open_budget_store",
    "release",
    "reserve",
    "run_remaining",
    "run_spent",
    "settle",
    "status",
    "uninstall",
]

# outlay.run(budget=..., requires=...) works as soon as the budgets package is imported.
install()
