"""What the engine knows about runs in this process: their budget, parent, guards and spend.

A run's budget covers its child runs' calls too (costs roll up the run tree), so the engine keeps
each run's parent to walk the chain. A finished run is kept whole as long as its ``Run`` object is
alive — held by the context of a task or thread the run started, which may still call after the
``with`` block, or by a child run (a ``Run`` holds its parent): those calls still count on, and
are refused by, the run's budget, and ``run_spent`` still answers. Once nothing holds it, and for a
run known by id only, the last :data:`ENDED_KEPT` are kept.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
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
        self._held: dict[str, RunInfo] = {}  # ended, while their Run object is alive
        # Ids whose Run object is gone, moved from _held to _ended at the next start or end: a
        # finalizer runs wherever the last reference drops (or the GC runs), perhaps in a thread
        # holding another lock, so it only appends here (atomic) and never takes ours.
        self._released: deque[str] = deque()
        self._ended: OrderedDict[str, RunInfo] = OrderedDict()
        # Guard state of runs this process never opened (an id from a gateway's X-Outlay-Run-Id
        # header, an extracted parent), per tenant: a client names the id, so another tenant's
        # run of the same id must not count, or stop, this one. The last ENDED_KEPT are kept.
        self._remote: OrderedDict[tuple[str | None, str], RunInfo] = OrderedDict()

    def start(
        self, run_id: str, parent: str | None, budget: Budget | None, tenant: str | None = None
    ) -> None:
        with self.lock:
            self._open[run_id] = RunInfo(parent=parent, budget=budget, tenant=tenant)
            self._drain_released()

    def end(self, run_id: str, run: object | None = None) -> None:
        """The run ended; it is kept while ``run`` (its ``Run`` object) is alive, then as one of the
        last :data:`ENDED_KEPT`. (A bounded window alone let a busy process forget a run whose
        background task still spent, and that task then spent past the run's budget.)"""
        with self.lock:
            self._drain_released()
            info = self._open.pop(run_id, None)
            if info is None:
                return
            if run is not None:
                try:
                    finalizer = weakref.finalize(run, self._released.append, run_id)
                except TypeError:  # not weakly referenceable: the window it is
                    pass
                else:
                    finalizer.atexit = False
                    self._held[run_id] = info
                    return
            self._keep_ended(run_id, info)

    def _drain_released(self) -> None:
        released = self._released
        while released:
            run_id = released.popleft()
            info = self._held.pop(run_id, None)
            if info is not None:
                self._keep_ended(run_id, info)

    def _keep_ended(self, run_id: str, info: RunInfo) -> None:
        self._ended[run_id] = info
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def get(self, run_id: str) -> RunInfo | None:
        """The run's info, open or ended (see the module docstring)."""
        info = self._open.get(run_id)
        if info is None:
            info = self._held.get(run_id)
        return info if info is not None else self._ended.get(run_id)

    def remote(self, tenant: str | None, run_id: str) -> RunInfo:
        """The guard state of ``run_id`` for ``tenant``, a run not opened in this process (created
        on first sight; the least recently used are forgotten past :data:`ENDED_KEPT`)."""
        with self.lock:
            key = (tenant, run_id)
            info = self._remote.get(key)
            if info is None:
                info = self._remote[key] = RunInfo(tenant=tenant)
                while len(self._remote) > ENDED_KEPT:
                    self._remote.popitem(last=False)
            else:
                self._remote.move_to_end(key)
            return info

    def remote_known(self, tenant: str | None, run_id: str) -> RunInfo | None:
        """:meth:`remote` without creating it."""
        with self.lock:
            return self._remote.get((tenant, run_id))

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
