"""The process's budget engine, for ``outlay.run(budget=...)`` and the module-level functions.

Code that wants its own engine (tests, several engines) builds a :class:`BudgetEngine` and calls its
methods; :func:`configure` makes one the process default that ``outlay.run`` and the recording
pipeline use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from decimal import Decimal

from outlay._errors import InvalidInput

from ._decision import Decision
from ._engine import BudgetEngine, BudgetStatus, Reservation
from ._open import open_budget_store
from ._policy import Budget, Scope

__all__ = [
    "check_run",
    "configure",
    "get_engine",
    "model_for",
    "release",
    "reserve",
    "run_remaining",
    "run_spent",
    "settle",
    "status",
]

_engine: BudgetEngine | None = None
_lock = threading.Lock()


def configure(engine: BudgetEngine) -> BudgetEngine:
    """Make ``engine`` the process default; returns it."""
    global _engine  # noqa: PLW0603  # the one process-wide default, like logging's root logger
    if not isinstance(engine, BudgetEngine):
        raise InvalidInput(f"expected a BudgetEngine, got {type(engine).__name__}", field="engine")
    with _lock:
        _engine = engine
    return engine


def _record_in_default_pipeline(decision: Decision) -> None:
    from outlay._api import get_outlay  # (lazily: the budgets package imports nothing of the pipeline)

    get_outlay().record_decision(decision)


def get_engine() -> BudgetEngine:
    """The default engine: until :func:`configure` is called, one with no policies on the store named
    by ``OUTLAY_BUDGET_URL``, else in memory, whose decisions are recorded in the default pipeline
    (``outlay.get_outlay()``) as zero-cost ``decision:<kind>`` events."""
    global _engine  # noqa: PLW0603
    engine = _engine
    if engine is None:
        with _lock:
            if _engine is None:
                # OUTLAY_BUDGET_URL (redis://, sqlite:PATH) shares counters across processes/replicas.
                url = os.environ.get("OUTLAY_BUDGET_URL")
                _engine = BudgetEngine(
                    open_budget_store(url) if url else None, decision_sink=_record_in_default_pipeline
                )
            engine = _engine
    return engine


def reserve(
    scope: object,
    estimate: object,
    *,
    budgets: Iterable[Budget] = (),
    also: Iterable[tuple[Scope, Iterable[Budget]]] = (),
    model: str | None = None,
    fingerprint: str | None = None,
    currency: str = "USD",
    ttl: float | None = None,
) -> Reservation:
    """:meth:`BudgetEngine.reserve` on the default engine."""
    return get_engine().reserve(
        scope,
        estimate,
        budgets=budgets,
        also=also,
        model=model,
        fingerprint=fingerprint,
        currency=currency,
        ttl=ttl,
    )


def settle(reservation: Reservation, actual: object = None) -> Decimal:
    """:meth:`BudgetEngine.settle` on the default engine."""
    return get_engine().settle(reservation, actual)


def release(reservation: Reservation) -> bool:
    """:meth:`BudgetEngine.release` on the default engine."""
    return get_engine().release(reservation)


def model_for(scope: object, requested_model: str) -> tuple[str, bool]:
    """:meth:`BudgetEngine.model_for` on the default engine."""
    return get_engine().model_for(scope, requested_model)


def status(scope: object, budget: Budget) -> BudgetStatus:
    """:meth:`BudgetEngine.status` on the default engine."""
    return get_engine().status(scope, budget)


def _run_id(run: object) -> str:
    """A run id from a Run object, an id string, or (``None``) the current context's run."""
    if isinstance(run, str) and run:
        return run
    if run is None:
        from outlay.context import current

        ctx = current()
        if ctx is None or ctx.run_id is None:
            raise InvalidInput("no run is open here; pass the run", field="run")
        return ctx.run_id
    run_id = getattr(run, "id", None)
    if not isinstance(run_id, str):
        raise InvalidInput(f"expected a Run or a run id, got {type(run).__name__}", field="run")
    return run_id


def run_spent(run: object = None) -> Decimal:
    """Settled spend of ``run`` (and its child runs) in this process: ``run.spent``."""
    return get_engine().run_spent(_run_id(run))


def run_remaining(run: object = None) -> Decimal | None:
    """What the run's budget still allows (``None`` if it has no hard limit): ``run.remaining``."""
    found = get_engine().run_status(_run_id(run))
    return None if found is None else found.remaining


def check_run(run: object = None, need: object = Decimal(0)) -> None:
    """``run.check()``: raise BudgetExceeded/RunStopped if the run cannot go on."""
    get_engine().check_run(_run_id(run), need)
