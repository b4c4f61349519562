"""``Outlay``: one assembled pipeline — event log, recorder, ledger writer, ledger and reports.

Where things live is chosen by URLs, each with an embedded default so ``pip install`` is enough:

============  =======================  =========================================================
what          setting                  default
============  =======================  =========================================================
home          ``url`` / OUTLAY_URL     ``./.outlay/outlay.db`` (the SQLite ledger; a directory
                                       means ``<dir>/outlay.db``; ``memory://`` keeps all in RAM)
event log     OUTLAY_STREAM_URL        ``events.db`` beside the SQLite ledger ``outlay.db``,
                                       ``<name>.events.db`` beside any other (or ``nats://...``)
ledger        OUTLAY_LEDGER_URL        the home URL (or ``postgresql://...``); with no home given,
                                       a SQLite ledger is the home
journal       ``journal`` /            ``inflight/`` beside a SQLite event log (the metered calls in
              OUTLAY_JOURNAL           flight, see :mod:`outlay._inflight`); ``"off"``; none in memory
============  =======================  =========================================================

With an embedded event log (SQLite or memory), :meth:`Outlay.reports` first lets the ledger writer
catch up, so a report sees every event recorded before it was asked for. With a distributed log
the ``outlay worker`` processes do the writing and reports read the ledger as it is.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._errors import ConfigError
from ._inflight import MeteredJournal
from ._journal import journal_destination
from ._recording import Recorder, check_event_labels
from ._urls import refuse_url_like_path
from ._usage import Usage
from .context import CostContext
from .context._context import MAX_RUN_PATH
from .events import CostEvent
from .ledger import LedgerStore, LedgerWriter, open_ledger
from .ledger._open import companion_path, ledger_file, refuse_event_log
from .pricing import PriceCatalog, default_catalog
from .stream import EventLog, InMemoryEventLog, SQLiteEventLog, open_event_log

if TYPE_CHECKING:
    from .budgets import BudgetEngine, Decision
    from .reporting import Reports

__all__ = ["Outlay", "decision_event", "embedded_log_path"]

_log = logging.getLogger("outlay")

_DEFAULT_HOME = Path(".outlay") / "outlay.db"
_DISTRIBUTED = frozenset({"nats", "tls"})  # the schemes of a shared event log (open_event_log)


def _ledger_path(url: str) -> Path | None:
    """The SQLite file a home/ledger URL names, or None when it is not SQLite."""
    if url.startswith(("postgresql://", "postgres://", "memory://", "nats://")):
        return None
    target = url.removeprefix("sqlite:")
    target = target[2:] if target.startswith("//") else target
    if "://" in target:
        return None
    refuse_url_like_path(target, field="url", expected="a path, sqlite:PATH, postgresql:// or memory://")
    return ledger_file(target)


def _home_url(url: object) -> str:
    """``url`` as the text of a home/ledger URL: a ``str`` or a path object, never ``str()`` of
    something else (``b"/data"`` would be a directory named ``b'``)."""
    value = os.fspath(url) if isinstance(url, os.PathLike) else url
    if type(value) is not str:
        raise ConfigError(f"expected a path or URL string, got {url!r}", field="url")
    return value


def _check_ledger_url(url: str, *, field: str) -> None:
    if "://" in url and not url.startswith(("postgresql://", "postgres://", "memory://", "sqlite:")):
        raise ConfigError(
            f"unsupported ledger URL {url!r}; use a path, sqlite:PATH, postgresql:// or memory://",
            field=field,
        )


def embedded_log_path(home: str) -> Path | None:
    """Where the embedded event log of a SQLite home lives, beside the ledger: ``events.db`` for
    ``outlay.db`` (the default name), ``<name>.events.db`` for any other ledger file. Each ledger
    has a log of its own: two ledgers in one directory sharing one log (and its consumer offset)
    would each take whichever events their writer read first."""
    path = _ledger_path(home)
    return None if path is None else companion_path(path, "events")


def _run_links(ctx: CostContext | None, run_id: str | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    """``run_id``'s parent, root and ancestors as ``ctx`` (the context the decision was made in)
    knows them, so that a run whose only event is a decision still hangs in its place in the tree:
    the current run itself, an enclosing run (a guard of an ancestor stopped the call), or a run
    refused as it opened, whose parent is the current run."""
    if ctx is None or run_id is None:
        return None, None, ()
    if run_id == ctx.run_id:
        return ctx.parent_run_id, ctx.root_run_id, ctx.run_path
    if run_id in ctx.run_path:
        at = ctx.run_path.index(run_id)
        return (ctx.run_path[at - 1] if at else None), ctx.root_run_id, ctx.run_path[:at]
    if ctx.run_id is None:  # a root run refused as it opened
        return None, run_id, ()
    path = (*ctx.run_path, ctx.run_id)[-MAX_RUN_PATH:]
    return ctx.run_id, ctx.root_run_id or ctx.run_id, path


def decision_event(decision: Decision, *, environment: str | None = None) -> CostEvent:
    """A budget decision as a zero-cost event (``operation="decision:<kind>"``), so it travels the
    same durable path as costs and shows in the ledger, breakdowns and audit exports."""
    from .context import current

    ctx = current()
    labels = {"message": decision.message}
    for name in ("scope", "key", "budget", "reason", "downgraded_to"):
        value = getattr(decision, name)
        if value is not None:
            labels[name] = str(value)
    for name in ("limit", "spent", "reserved", "estimate"):
        amount = getattr(decision, name)
        if amount is not None:
            labels[name] = format(amount, "f")
    if decision.retry_after is not None:
        labels["retry_after"] = f"{decision.retry_after:.3f}"
    tenant = decision.tenant or (ctx.tenant if ctx is not None else None)
    run_id = decision.run_id or (ctx.run_id if ctx else None)
    parent_run_id, root_run_id, run_path = _run_links(ctx, run_id)
    return CostEvent(
        event_id=decision.id,
        time=decision.time,
        operation=f"decision:{decision.kind}",
        tenant_id=tenant,
        attribution="attributed" if tenant else "unattributed",
        origin=None if tenant else (ctx.run_name if ctx and ctx.run_name else "budgets"),
        feature=ctx.feature if ctx else None,
        workspace_id=ctx.workspace if ctx else None,
        environment=environment or (ctx.environment if ctx else "production"),
        run_id=run_id,
        parent_run_id=parent_run_id,
        root_run_id=root_run_id,
        run_path=run_path,
        # the current run's name, unless the decision is about another run (an ancestor, or one
        # refused as it opened), whose name the context does not hold
        agent=ctx.run_name if ctx and run_id == ctx.run_id else None,
        model=decision.model,
        labels=labels,
        priced=True,
        cost=Decimal(0),
        price_version="decision",
    )


# The parent's objects in a forked child (see Outlay._after_fork): referenced, never used again.
_INHERITED: list[object] = []
_FORKED = threading.Lock()  # one thread of a child reopens an Outlay; new in every child


def _new_fork_lock() -> None:
    global _FORKED  # noqa: PLW0603  # the parent's may have been held at the fork
    _FORKED = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_lock)


class Outlay:
    """The pipeline of DESIGN.md in one object. Thread-safe; close it (or let atexit) when done."""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        stream_url: str | None = None,
        ledger_url: str | None = None,
        mode: str = "durable",
        prices: str | os.PathLike[str] | None = None,
        catalog: PriceCatalog | None = None,
        service: str | None = None,
        require_tenant: bool = False,
        log: EventLog | None = None,
        ledger: LedgerStore | None = None,
        journal: bool | str | os.PathLike[str] | None = None,
    ) -> None:
        given_home = _home_url(url) if url is not None else os.environ.get("OUTLAY_URL")
        named_ledger = ledger_url or os.environ.get("OUTLAY_LEDGER_URL") or given_home
        if named_ledger:
            # Refused now: events would otherwise be recorded into ./.outlay/events.db, for a ledger
            # that fails only when a report (or the writer) first opens it.
            if ledger_url:
                named_by = "ledger_url"
            elif named_ledger != given_home:
                named_by = "OUTLAY_LEDGER_URL"
            else:
                named_by = "url" if url is not None else "OUTLAY_URL"
            _check_ledger_url(named_ledger, field=named_by)
        self._ledger_named = bool(named_ledger)
        self.ledger_url = named_ledger or str(_DEFAULT_HOME)
        # With no home given, a SQLite ledger is the home: its event log is the one beside it (as
        # `outlay report --ledger PATH` reads it), not one under ./.outlay/.
        home = given_home or (self.ledger_url if _ledger_path(self.ledger_url) else str(_DEFAULT_HOME))
        stream = stream_url or os.environ.get("OUTLAY_STREAM_URL")
        if catalog is None:
            catalog = PriceCatalog.load(prices) if prices is not None else default_catalog()
        self.catalog = catalog
        # What this object opened itself, it can open again in a child process after fork().
        self._log_url: str | None = None
        self._ledger_owned = ledger is None
        if log is None:
            if home == "memory://" and stream is None:
                log = InMemoryEventLog()
                ledger = ledger or open_ledger("memory://")
            else:
                self._log_url = stream or self._embedded_log_path(home)
                log = open_event_log(self._log_url)
        self._log = log
        # NATS in any spelling open_event_log takes (nats://, tls://, NATS://): a process that took
        # a shared stream for an embedded log would run the ledger writer on its consumer itself.
        self.embedded = (stream or "").partition("://")[0].lower() not in _DISTRIBUTED
        self._ledger = ledger
        self._lock = threading.Lock()
        self._recorder = Recorder(
            log,
            catalog=catalog,
            mode=mode,
            service=service or os.environ.get("OUTLAY_SERVICE") or None,
            require_tenant=require_tenant,
        )
        self._writer: LedgerWriter | None = None
        self._closed = False
        self._pid = os.getpid()
        try:
            directory = self._journal_directory(journal)
        except ConfigError:
            if self._log_url is not None:
                log.close()
            raise
        self.journal = (
            MeteredJournal(directory, destination=journal_destination(log, self.ledger_url))
            if directory is not None
            else None
        )
        self._recorder.journal = self.journal
        if self.journal is not None:
            try:
                # Calls a process metering on this home made and never recorded (it was killed).
                self.recover_lost_calls()
            except Exception:  # opened all the same: the journal stays, for the next start
                _log.exception("outlay: recording the metered calls of stopped processes failed")

    def _journal_directory(self, journal: object) -> Path | None:
        """Where metered calls are noted while in flight: ``journal`` (a directory, True for the
        default, False or "off" for none), else ``OUTLAY_JOURNAL``, else ``inflight/`` beside an
        event log on disk. A pipeline in memory has none: it dies with the process it would
        outlive."""
        in_memory = isinstance(self._log, InMemoryEventLog)
        if journal is None:
            journal = os.environ.get("OUTLAY_JOURNAL") or None
            if in_memory:
                return None  # (a setting for the deployment's pipelines on disk)
        if journal is False or journal == "off":
            return None
        if journal is None or journal is True:
            path = getattr(self._log, "path", None) if isinstance(self._log, SQLiteEventLog) else None
            if path is None or in_memory:
                if journal is True:
                    raise ConfigError(
                        "a journal needs an event log on disk: this pipeline's is "
                        + ("in memory (memory://)" if in_memory else "not a file; name a directory"),
                        field="journal",
                    )
                return None
            return Path(path).resolve().parent / "inflight"
        if isinstance(journal, bool) or not isinstance(journal, str | os.PathLike) or not os.fspath(journal):
            raise ConfigError(f"expected a directory, True, False or 'off', got {journal!r}", field="journal")
        if in_memory:
            raise ConfigError("a pipeline in memory (memory://) has no journal", field="journal")
        target = os.fspath(journal)
        refuse_url_like_path(target, field="journal", expected="a directory, True, False or 'off'")
        return Path(target).expanduser()

    def recover_lost_calls(self, budgets: BudgetEngine | None = None) -> int:
        """Record the metered calls that processes now gone (killed, crashed) admitted on this home
        and never recorded; returns how many. Each is one ``estimated`` event at the worst case it
        reserved, under the id its completion would have had (never counted twice, however often
        this runs). Run when the pipeline opens; with ``budgets``, also charges their holds now
        (else a hold in a shared store is charged when it expires)."""
        if self.journal is None:
            return 0
        return self.journal.recover(self.recorder, budgets)

    # -- fork() -------------------------------------------------------------------------------------

    @property
    def log(self) -> EventLog:
        if self._pid != os.getpid():
            self._after_fork()
        return self._log

    @property
    def recorder(self) -> Recorder:
        if self._pid != os.getpid():
            self._after_fork()
        return self._recorder

    def _after_fork(self) -> None:
        """In a child forked after this object was built (gunicorn --preload, Celery prefork,
        multiprocessing's fork), the parent's SQLite connections, locks and flushing thread must
        not be used: a durable append would wait forever on a commit leader that does not exist
        here, and a batching buffer would never be drained. The log (if this object opened it), the
        recorder and the ledger are opened again for this process; the parent's buffered events
        stay the parent's. Objects passed in (``log=``, ``ledger=``) are the caller's to reopen."""
        with _FORKED:
            if self._pid != os.getpid():  # (another thread of the child may have done it)
                self._reopen()

    def _reopen(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by a thread gone here
        old = self._recorder
        # Kept, never closed or collected here: closing the parent's SQLite connections from a
        # child is what SQLite warns against (https://www.sqlite.org/howtocorrupt.html).
        _INHERITED.append((self._log, old, self._ledger, self._writer))
        if self._log_url is not None:
            self._log = open_event_log(self._log_url)
        recorder = Recorder(
            self._log,
            catalog=old.catalog,
            mode=old.mode,
            service=old.service,
            require_tenant=old.require_tenant,
        )
        recorder.unpriced_estimate = old.unpriced_estimate
        recorder.journal = old.journal  # (which keeps a file of its own in this process)
        old.abandon()
        self._recorder = recorder
        if self._ledger_owned and self.ledger_url != "memory://":
            self._ledger = None  # reopened on first use (an in-memory one is this process's copy)
        self._writer = None
        self._pid = os.getpid()

    def _embedded_log_path(self, home: str) -> str:
        path = embedded_log_path(home) or _DEFAULT_HOME.parent / "events.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    # -- the pipeline's parts, opened when first needed ------------------------------------------

    @property
    def ledger(self) -> LedgerStore:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._ledger is None:
                if not self.embedded and not self._ledger_named:
                    # A worker (or API) on the shared stream with the ledger setting missing or
                    # misspelt: the embedded default would take the stream's events (acknowledged,
                    # so never redelivered) into a local file that no report of the deployment reads.
                    raise ConfigError(
                        "the event log is a shared NATS stream but no ledger is named: set"
                        " OUTLAY_LEDGER_URL (postgresql://...) or OUTLAY_URL, or pass --ledger;"
                        f" refusing the embedded default {_DEFAULT_HOME}",
                        field="ledger",
                    )
                path = _ledger_path(self.ledger_url)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not self._shares_file_with_log(path):
                        refuse_event_log(path)
                self._ledger = open_ledger(self.ledger_url)
            return self._ledger

    def _shares_file_with_log(self, ledger_path: Path) -> bool:
        log = self._log
        if not isinstance(log, SQLiteEventLog):
            return False
        return Path(log.path).resolve() == ledger_path.resolve()

    @property
    def writer(self) -> LedgerWriter:
        ledger = self.ledger
        with self._lock:
            if self._writer is None:
                self._writer = LedgerWriter(self.log, ledger)
            return self._writer

    def catch_up(self) -> None:
        """Write every event in the log so far into the ledger (what ``outlay worker`` does)."""
        self.recorder.flush()
        self.writer.catch_up()

    def reports(self) -> Reports:
        from .reporting import Reports

        if self.embedded:
            self.catch_up()
        return Reports(self.ledger)

    # -- recording (see Recorder) -----------------------------------------------------------------

    def record(self, event: CostEvent) -> CostEvent:
        """Append a ready-made event; its labels must be within the bounds of a new event's."""
        return self.recorder.record(check_event_labels(event))

    def record_llm(self, **kwargs: Any) -> CostEvent:
        return self.recorder.record_llm(**kwargs)

    def record_tool(self, name: str, quantity: object = 1, **kwargs: Any) -> CostEvent:
        return self.recorder.record_tool(name, quantity, **kwargs)

    def record_usage(self, *, usage: Usage | Mapping[str, Any], **kwargs: Any) -> CostEvent:
        return self.recorder.record_usage(usage=usage, **kwargs)

    def record_decision(self, decision: Decision) -> None:
        """A ``decision_sink`` for :class:`outlay.budgets.BudgetEngine`: decisions go to the ledger."""
        self.recorder.record(decision_event(decision))

    def install_decision_sink(self, engine: BudgetEngine) -> None:
        engine.decision_sink = self.record_decision

    def flush(self, timeout: float | None = None) -> None:
        """See :func:`outlay.flush`."""
        self.recorder.flush(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self, timeout: float | None = None, *, catch_up: bool = True) -> None:
        """Flush what is buffered, let the embedded writer catch up, release the log and ledger.
        Idempotent; ``with Outlay(...) as o:`` calls it on the way out. ``timeout`` bounds the wait
        for a batching buffer to drain (``BackendError`` past it; at exit, 30 s). ``catch_up=False``
        leaves what the log holds to the next writer (``outlay worker`` stopping on SIGTERM)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.recorder.close(timeout)
        finally:
            if self.journal is not None:  # what was buffered is durable now: nothing left in flight
                self.journal.close(self.recorder)
        if catch_up and self.embedded and self._ledger is not None:
            self.writer.catch_up()
        self.log.close()
        if self._ledger is not None:
            self._ledger.close()
