"""What the engine knows about runs in this process: their budget, parent, guards and spend.

A run's budget covers its child runs' calls too (costs roll up the run tree), so the engine keeps
each run's parent to walk the chain. The last :data:`ENDED_KEPT` finished runs are kept whole: a
task or thread the run started may still call after its ``with`` block, and those calls still
count on (and are refused by) the run's budget; ``run_spent`` still answers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from outlay._money import MONEY_CONTEXT, ZERO

from ._guards import RunGuardState
from ._policy import Budget

__all__ = ["RunBook", "RunInfo"]

ENDED_KEPT: Final = 10_000


@dataclass(slots=True)
class RunInfo:
    parent: str | None = None
    budget: Budget | None = None
    tenant: str | None = None  # the run's context's tenant: its run policies' counters are the tenant's
    spent: Decimal = ZERO
    guards: RunGuardState = field(default_factory=RunGuardState)


class RunBook:
    """Thread-safe registry of open runs (and the spend of recently ended ones)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._open: dict[str, RunInfo] = {}
        self._ended: OrderedDict[str, RunInfo] = OrderedDict()

    def start(
        self, run_id: str, parent: str | None, budget: Budget | None, tenant: str | None = None
    ) -> None:
        with self.lock:
            self._open[run_id] = RunInfo(parent=parent, budget=budget, tenant=tenant)

    def end(self, run_id: str) -> None:
        with self.lock:
            info = self._open.pop(run_id, None)
            if info is not None:
                self._ended[run_id] = info
                while len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)

    def get(self, run_id: str) -> RunInfo | None:
        """The run's info, open or recently ended."""
        info = self._open.get(run_id)
        return info if info is not None else self._ended.get(run_id)

    def info(self, run_id: str) -> RunInfo:
        """The run's info, created on first sight (runs from another process, or no listener)."""
        with self.lock:
            info = self.get(run_id)
            if info is None:
                info = self._open[run_id] = RunInfo()
            return info

    def chain(self, runs: Iterable[str]) -> list[str]:
        """The given runs and every known ancestor, innermost first, without repeats."""
        out: dict[str, None] = {}
        for run_id in runs:
            current: str | None = run_id
            while current is not None and current not in out:
                out[current] = None
                info = self.get(current)
                current = info.parent if info is not None else None
        return list(out)

    def add_spend(self, runs: Iterable[str], amount: Decimal) -> None:
        with self.lock:
            for run_id in runs:
                info = self.get(run_id)
                if info is not None:
                    info.spent = MONEY_CONTEXT.add(info.spent, amount)

    def spent(self, run_id: str) -> Decimal:
        with self.lock:
            info = self.get(run_id)
            return ZERO if info is None else info.spent
