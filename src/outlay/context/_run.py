"""``run()``: a node of the run tree, the boundary that costs roll up to (and budgets attach to)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Protocol, Self

import uuid_utils

from ._context import (
    MAX_RUN_PATH,
    RUN_KINDS,
    CostContext,
    attach,
    check_choice,
    check_str,
    current,
    default_environment,
    derive_run,
)
from ._scope import Scope

__all__ = ["Run", "RunListener", "RunScope", "add_run_listener", "remove_run_listener", "run"]

_log = logging.getLogger("outlay.context")
_BLANK: Final = CostContext()


class Run:
    """One open (or finished) run in this process.

    ``id`` is a UUIDv7 string; ``parent_id`` is the enclosing run's id (in this process or, after
    :func:`outlay.extract`, in the sender's) or ``None`` for a root; ``root_id`` is the id of the
    tree's root (its own id for a root). ``budget`` and ``requires`` are kept for the budgets
    package, which reads them from a run listener.
    """

    __slots__ = (
        "__weakref__",
        "_parent",
        "budget",
        "ended_at",
        "id",
        "kind",
        "name",
        "parent_id",
        "requires",
        "root_id",
        "started_at",
    )

    def __init__(
        self,
        *,
        id: str,  # the run's id is called id everywhere in the public API
        name: str,
        kind: str,
        parent_id: str | None,
        root_id: str,
        budget: object | None = None,
        requires: str | None = None,
        parent: Run | None = None,
    ) -> None:
        # The enclosing Run in this process, held so that it lives as long as its children: what
        # the budgets know of a run (its budget binding what the run started) lasts that long.
        self._parent = parent
        self.id = id
        self.name = name
        self.kind = kind
        self.parent_id = parent_id
        self.root_id = root_id
        self.budget = budget
        self.requires = requires
        self.started_at = datetime.now(UTC)
        self.ended_at: datetime | None = None

    # The budget accessors live in outlay.budgets; imported lazily so the context package stays
    # usable (and cheap to import) on its own.
    @property
    def spent(self) -> Decimal:
        """What this run and its child runs have settled so far, in this process."""
        from outlay.budgets import run_spent

        return run_spent(self)

    @property
    def remaining(self) -> Decimal | None:
        """What the run's budget still allows, or ``None`` when it has no hard limit."""
        from outlay.budgets import run_remaining

        return run_remaining(self)

    def check(self, need: object = 0) -> None:
        """A cooperative checkpoint: raise ``BudgetExceeded``/``RunStopped`` if the run must stop."""
        from outlay.budgets import check_run

        check_run(self, need)

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, kind={self.kind!r}, id={self.id!r}, parent_id={self.parent_id!r})"


class RunListener(Protocol):
    """Told when a run opens and closes (the budgets package checks and settles through this).

    An exception from ``on_run_start`` refuses the run: it propagates to the caller and the run's
    body never executes. ``ctx`` is the run's own context (``ctx.run is run``).
    """

    def on_run_start(self, run: Run, ctx: CostContext) -> None: ...

    def on_run_end(self, run: Run, ctx: CostContext, exc: BaseException | None) -> None: ...


# A tuple replaced whole under a lock: readers on the hot path take no lock.
_listeners: tuple[RunListener, ...] = ()
_listeners_lock = threading.Lock()


def add_run_listener(listener: RunListener) -> None:
    """Call ``listener`` for every run opened from now on, in every thread and task."""
    global _listeners  # noqa: PLW0603  # process-wide registry, copy-on-write
    with _listeners_lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def remove_run_listener(listener: RunListener) -> None:
    global _listeners  # noqa: PLW0603
    with _listeners_lock:
        _listeners = tuple(known for known in _listeners if known is not listener)


class RunScope(Scope[Run]):
    """Returned by :func:`run`; entering it opens a new :class:`Run` and yields it."""

    __slots__ = ("_budget", "_ctx", "_kind", "_name", "_requires", "_run", "_started")

    def __init__(self, name: str, kind: str, budget: object | None, requires: str | None) -> None:
        super().__init__()
        self._name = name
        self._kind = kind
        self._budget = budget
        self._requires = requires
        self._run: Run | None = None
        self._ctx: CostContext | None = None
        self._started: tuple[RunListener, ...] = ()

    def _open(self) -> Run:
        base = current()
        if base is None:
            base = _BLANK
            environment = default_environment()
        else:
            environment = base.environment
        run_id = str(uuid_utils.uuid7())
        # The enclosing run may be remote (extracted): its ids are on the context, not on a Run.
        parent_id = base.run_id
        root_id = base.root_run_id or parent_id or run_id
        # The ancestors, so that the ledger can link a run that records nothing into its tree.
        path = base.run_path
        if parent_id is not None:
            path = (*path, parent_id) if len(path) < MAX_RUN_PATH else (*path[1:], parent_id)
        new_run = Run(
            id=run_id,
            name=self._name,
            kind=self._kind,
            parent_id=parent_id,
            root_id=root_id,
            budget=self._budget,
            requires=self._requires,
            parent=base.run,
        )
        ctx = derive_run(base, environment, run_id, parent_id, root_id, self._name, self._kind, path, new_run)
        listeners = _listeners
        if listeners:
            self._start_listeners(listeners, new_run, ctx)
        self._run, self._ctx = new_run, ctx
        self._token = attach(ctx)
        return new_run

    def _start_listeners(self, listeners: tuple[RunListener, ...], new_run: Run, ctx: CostContext) -> None:
        started: list[RunListener] = []
        try:
            for listener in listeners:
                listener.on_run_start(new_run, ctx)
                started.append(listener)
        except BaseException as refusal:
            # Listeners that accepted the run (e.g. reserved budget) must hear that it ended.
            new_run.ended_at = datetime.now(UTC)
            self._end_listeners(tuple(started), new_run, ctx, refusal)
            raise
        self._started = tuple(started)

    def _close(self, exc: BaseException | None) -> None:
        ended, ctx = self._run, self._ctx
        started, self._started = self._started, ()
        self._run = self._ctx = None
        error: BaseException | None = None
        try:
            if ended is not None:
                ended.ended_at = datetime.now(UTC)
                if started and ctx is not None:
                    error = self._end_listeners(started, ended, ctx, exc)
        finally:
            super()._close(exc)
        if error is not None:
            raise error

    @staticmethod
    def _end_listeners(
        started: tuple[RunListener, ...], ended: Run, ctx: CostContext, exc: BaseException | None
    ) -> BaseException | None:
        """Tell every listener, last started first; return the first listener error to raise.

        A listener error is raised only when the body succeeded: the body's own exception is the
        one the caller must see, so listener errors are then logged instead.
        """
        first: BaseException | None = None
        for listener in reversed(started):
            try:
                listener.on_run_end(ended, ctx, exc)
            except Exception as error:
                if exc is None and first is None:
                    first = error
                else:
                    _log.error("outlay: run listener %r failed on_run_end", listener, exc_info=error)
        return first

    def _fresh(self) -> Self:
        return type(self)(self._name, self._kind, self._budget, self._requires)


def run(
    name: str, *, kind: str = "agent", budget: object | None = None, requires: str | None = None
) -> RunScope:
    """Open a run named ``name`` for the ``with`` block (or each call of a decorated function).

    The run nests under the enclosing run, in this process or the sender's after ``extract``.
    ``kind`` is one of agent|tool|llm|retrieval|job. ``budget`` and ``requires`` are carried on the
    :class:`Run` for the budgets package. Raises :class:`~outlay.InvalidInput` naming the field.
    """
    check_str("name", name)
    check_choice("kind", kind, RUN_KINDS)
    if requires is not None:
        check_str("requires", requires)
    return RunScope(name, kind, budget, requires)
