"""``Recorder``: turn what happened into priced, attributed cost events on the event log.

An event is built from the current cost context (attribution and run ids), rated against the price
catalog, encoded as CloudEvents JSON and appended to the event log. In ``durable`` mode ``record``
returns once the event is committed (the SQLite log group-commits concurrent recorders); in
``batching`` mode it returns once the event is buffered, and :meth:`Recorder.flush` (also run at a
clean exit) makes everything buffered durable — a crash loses at most the unflushed buffer.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ._errors import AttributionMissing, ConfigError, InvalidEvent, InvalidInput, InvalidUsage
from ._money import MAX_AMOUNT
from ._usage import Usage
from .context import CostContext, attach, current, detach
from .context._context import check_labels
from .events import ATTRIBUTED, CALLER_PRICED, UNATTRIBUTED, CostEvent, encode_event, new_event_id
from .events._event import MAX_ID
from .pricing import PriceCatalog, default_catalog
from .providers import normalize_provider, parse_response
from .stream import BatchingAppender, EventLog

if TYPE_CHECKING:
    from ._inflight import MeteredJournal

__all__ = ["MODES", "UNPRICED_ESTIMATE", "Metered", "Recorder", "check_event_labels"]

MODES: Final = ("durable", "batching")
#: The default hold (and charge) of a call whose model has no price: unknown is not zero.
UNPRICED_ESTIMATE: Final = Decimal("0.01")


def program_name() -> str | None:
    """The name this process runs under: ``pkg.tool`` for ``python -m pkg.tool``, else the script or
    executable (``nightly.py``, ``celery``); ``None`` for ``python -c`` or an interactive session."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return _as_origin(str(spec.name).removesuffix(".__main__"))
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return _as_origin(name) if name and name not in ("-c", "-") else None


def _as_origin(name: str) -> str | None:
    """``name`` as an event's origin can hold it: a file name that is not UTF-8 (``os.fsdecode``
    gives lone surrogates) or is very long would otherwise fail every unattributed event."""
    if not name.isprintable() or len(name) > MAX_ID:
        raw = name.encode("utf-8", "surrogateescape")
        name = raw.decode("utf-8", "backslashreplace")
        name = "".join(c if c.isprintable() else "?" for c in name)[:MAX_ID]
    return name or None


def _canonical_provider(provider: str | None) -> str | None:
    """A known provider under its one id (``OpenAI`` -> ``openai``, ``gemini`` -> ``google``), as
    it is priced: else a breakdown by provider splits one provider's spend over its spellings. A
    name the registry does not know (a custom one, priced by overrides) is kept as given."""
    if type(provider) is not str:
        return provider  # (refused, naming the field, by the event)
    try:
        return normalize_provider(provider)
    except InvalidInput:
        return provider


def _check_service(service: object) -> str | None:
    if service is None:
        return None
    if type(service) is not str or not service.isprintable() or len(service) > MAX_ID or not service.strip():
        raise ConfigError(
            f"must be a non-empty printable string of at most {MAX_ID} characters, got {service!r}",
            field="service",
        )
    return service


def _caller_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` given to a ``record_*`` call, with its ``labels`` (if any) checked against the
    bounds of every new event's labels (:func:`outlay.context.check_labels`)."""
    if fields.get("labels") is not None:
        fields["labels"] = check_labels(fields["labels"], error=InvalidEvent)
    return fields


def check_event_labels(event: CostEvent) -> CostEvent:
    """``event`` if its labels are within the bounds of a new event's (a ready-made event from a
    caller, an ingested one), else :class:`InvalidEvent` naming ``labels``."""
    if isinstance(event, CostEvent) and event.labels:  # (not an event: refused by record, naming it)
        check_labels(event.labels, error=InvalidEvent)
    return event


def _origin(ctx: CostContext | None, fallback: str) -> str:
    """Where unattributed spend came from: the innermost named thing we know of."""
    if ctx is not None:
        for value in (ctx.run_name, ctx.workflow_id, ctx.feature):
            if value:
                return value
    return fallback


def origin_of(recorder: Recorder, ctx: CostContext | None) -> str:
    """The origin ``recorder`` gives an unattributed event built in ``ctx``."""
    return _origin(ctx, recorder._origin)


class Recorder:
    """Builds, rates and durably appends cost events. Thread-safe; one per process is typical."""

    def __init__(
        self,
        log: EventLog,
        *,
        catalog: PriceCatalog | None = None,
        mode: str = "durable",
        service: str | None = None,
        require_tenant: bool = False,
        batch_size: int = 1000,
        max_delay: float = 0.05,
        max_buffer: int = 10_000,
    ) -> None:
        if mode not in MODES:
            raise InvalidInput(f"must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
        # Checked now: a service no event can carry would fail every record, after the call is billed.
        service = _check_service(service)
        if type(require_tenant) is not bool:
            raise ConfigError(f"must be True or False, got {require_tenant!r}", field="require_tenant")
        self.log = log
        self.catalog = catalog or default_catalog()
        self.mode = mode
        self.service = service
        # The origin of unattributed spend outside any run, workflow or feature: the service, else
        # the program (a job's script or command), never a bare "unknown" when a name is known.
        self._origin = service or program_name() or "unknown"
        self.require_tenant = require_tenant
        #: What a metered call holds (and is charged, unless its usage prices it) when the catalog
        #: has no price for its model, as the gateway's ``unpriced_estimate``.
        self.unpriced_estimate = UNPRICED_ESTIMATE
        self._batcher = (
            BatchingAppender(log, max_events=batch_size, max_delay=max_delay, max_buffer=max_buffer)
            if mode == "batching"
            else None
        )
        #: Where metered calls are noted while in flight, so that a call whose process is killed
        #: is still recorded (by the next start): set by :class:`outlay.Outlay` on a home on disk.
        self.journal: MeteredJournal | None = None
        self._durable_listeners: list[Callable[[], None]] = []
        if self._batcher is not None:
            self._batcher.on_durable = self._durable_now

    def on_durable(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the recorder's thread, batching mode) each time buffered events
        have become durable: what waits for that (a journal that must not forget a call before its
        event is durable) learns it then, not at its next call. Durable mode: never called."""
        self._durable_listeners.append(listener)

    def _durable_now(self) -> None:
        journal = self.journal
        if journal is not None:  # the calls whose events were only buffered are done now
            journal.sync(self)
        for listener in self._durable_listeners:
            listener()

    # -- building -------------------------------------------------------------------------------

    def build(
        self,
        *,
        operation: str,
        provider: str | None,
        model: str | None,
        usage: Usage,
        at: datetime | None = None,
        context: CostContext | None = None,
        status: str = "ok",
        latency_ms: float | None = None,
        cost: Decimal | None = None,
        **fields: Any,
    ) -> CostEvent:
        """A rated :class:`CostEvent` for ``usage`` in ``context`` (default: the current one).

        ``cost`` given explicitly (an operation priced by its caller) is recorded as is; otherwise
        the usage is rated against the catalog at ``at``. ``fields`` set any other event field
        (``region``, ``retention``, ``labels``...); they win over the context.
        """
        ctx = context if context is not None else current()
        moment = at or datetime.now(UTC)
        provider = _canonical_provider(provider)
        for unit, quantity in usage.units.items() if isinstance(usage, Usage) else ():
            if quantity >= MAX_AMOUNT:
                # As a token count past 10^12: refused naming the unit, not recorded unpriced with a
                # reason that blames the prices (10^40 tool calls is no amount a ledger holds).
                raise InvalidUsage(
                    f"must be below 10^15 for one operation, got {quantity}", field=f"units.{unit}"
                )
        attributed = ctx is not None and ctx.tenant is not None
        if not attributed and self.require_tenant:
            raise AttributionMissing(
                f"{operation} on {provider}/{model} has no tenant (outlay.attribute(tenant=...) is missing)"
            )
        event_fields: dict[str, Any] = {
            "time": moment,
            "operation": operation,
            "provider": provider,
            "model": model,
            "usage": usage,
            "status": status,
            "latency_ms": latency_ms,
            "attribution": ATTRIBUTED if attributed else UNATTRIBUTED,
        }
        if self.service:
            event_fields["source"] = self.service
        if ctx is not None:
            event_fields.update(
                tenant_id=ctx.tenant, workspace_id=ctx.workspace, user_id=ctx.user,
                billing_unit=ctx.billing_unit, feature=ctx.feature, environment=ctx.environment,
                labels=ctx.labels, request_id=ctx.request_id, workflow_id=ctx.workflow_id,
                run_id=ctx.run_id, parent_run_id=ctx.parent_run_id, root_run_id=ctx.root_run_id,
                run_path=ctx.run_path, agent=ctx.run_name, run_kind=ctx.run_kind,
            )  # fmt: skip
        if not attributed:
            event_fields["origin"] = fields.pop("origin", None) or _origin(ctx, self._origin)
        event_fields.update(fields)
        if cost is not None:
            return CostEvent(**event_fields, cost=cost, priced=True, price_version=CALLER_PRICED)
        if provider is None or model is None:
            return CostEvent(
                **event_fields,
                priced=False,
                unpriced_reason=f"{operation} has no provider/model to price it by",
            )
        rating = self.catalog.rate(usage, provider=provider, model=model, at=moment)
        if not usage.complete and rating.priced:
            # A lower bound is not the cost: keep it out of totals until re-rated or confirmed.
            return CostEvent(
                **event_fields, priced=False, price_version=rating.price_version,
                unpriced_reason=f"usage incomplete: {usage.reason or 'not reported'}",
                unit_prices=rating.unit_prices, cost_breakdown=rating.breakdown,
            )  # fmt: skip
        return CostEvent(
            **event_fields, cost=rating.cost, priced=rating.priced, unpriced_reason=rating.reason,
            price_version=rating.price_version, unit_prices=rating.unit_prices,
            cost_breakdown=rating.breakdown,
        )  # fmt: skip

    # -- recording ------------------------------------------------------------------------------

    def record(self, event: CostEvent) -> CostEvent:
        """Append ``event``; durable on return in ``durable`` mode. Returns it for chaining."""
        if not isinstance(event, CostEvent):
            raise InvalidInput(f"expected a CostEvent, got {type(event).__name__}", field="event")
        event = self._with_origin(event)
        payload = encode_event(event)
        if self._batcher is not None:
            self._batcher.append((payload,))
        else:
            self.log.append((payload,))
        return event

    def _with_origin(self, event: CostEvent) -> CostEvent:
        """A ready-made unattributed event with no origin takes the one :meth:`build` would give
        it (the current run, workflow or feature, else the service or program): unattributed spend
        is never recorded as coming from nowhere."""
        if event.origin is None and event.attribution == UNATTRIBUTED:
            return replace(event, origin=_origin(current(), self._origin))
        return event

    def record_many(self, events: Sequence[CostEvent]) -> None:
        """Append ``events`` together: one durable commit for all of them in ``durable`` mode."""
        payloads = [encode_event(self._with_origin(event)) for event in events]
        if not payloads:
            return
        if self._batcher is not None:
            self._batcher.append(payloads)
        else:
            self.log.append(payloads)

    def try_record_many(self, events: Sequence[CostEvent]) -> bool:
        """:meth:`record_many` if the log can append without waiting for another writer (see
        :meth:`EventLog.try_append`); False, having recorded nothing, if it would wait — or in
        ``batching`` mode, whose buffer is drained by its own thread."""
        if self._batcher is not None:
            return False
        payloads = [encode_event(self._with_origin(event)) for event in events]
        return not payloads or self.log.try_append(payloads) is not None

    def record_llm(
        self,
        *,
        provider: str,
        model: str | None = None,
        usage: Usage | None = None,
        response: object = None,
        api: str | None = None,
        operation: str | None = None,
        **fields: Any,
    ) -> CostEvent:
        """Record one LLM call from its ``usage`` or from the provider's ``response`` (dict, JSON or
        SDK object: the model it reports is the one priced)."""
        if (usage is None) == (response is None):
            raise InvalidInput("pass exactly one of usage= or response=", field="usage")
        if response is not None:
            parsed = parse_response(provider, response, api)
            usage, model = parsed.usage, parsed.model or model
        if model is None:
            raise InvalidInput("the model is not known: pass model=", field="model")
        assert usage is not None
        op = operation or ("embedding" if api == "embeddings" else "chat")
        fields = _caller_fields(fields)
        return self.record(self.build(operation=op, provider=provider, model=model, usage=usage, **fields))

    def record_tool(
        self, name: str, quantity: object = 1, *, unit: str = "calls", provider: str = "tools", **fields: Any
    ) -> CostEvent:
        """Record ``quantity`` ``unit``s of a tool (priced by a custom unit ``provider``/``name``)."""
        usage = Usage(units={unit: quantity})  # type: ignore[dict-item]  # validated by Usage
        fields = _caller_fields(fields)
        return self.record(
            self.build(
                operation=fields.pop("operation", "tool"),
                provider=provider,
                model=name,
                usage=usage,
                **fields,
            )
        )

    def record_usage(
        self,
        *,
        operation: str,
        provider: str | None,
        model: str | None,
        usage: Usage | Mapping[str, Any],
        **fields: Any,
    ) -> CostEvent:
        """Record any billable operation: retrieval, embeddings, GPU time, ... (``usage`` may be a dict)."""
        if not isinstance(usage, Usage):
            usage = Usage.from_dict(usage)
        fields = _caller_fields(fields)
        return self.record(
            self.build(operation=operation, provider=provider, model=model, usage=usage, **fields)
        )

    @contextmanager
    def meter(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        api: str | None = None,
        operation: str = "chat",
        budgets: Any = None,
        fingerprint: str | None = None,
        ttl: float | None = None,
        service_tier: str | None = None,
    ) -> Iterator[Metered]:
        """Reserve an estimate with the budget engine, yield, then record and settle the actual cost.

        ``budgets`` is a ``BudgetEngine`` (default: ``outlay.budgets.get_engine()``). Raises
        ``BudgetExceeded``/``Throttled``/``RunStopped`` *before* the call when it may not go ahead;
        ``metered.model`` is the model to call (a soft limit may have downgraded it). ``ttl``: the
        seconds the call may take before its hold is charged as a crashed caller's (default: the
        engine's ``reservation_ttl``); give a long stream a longer one. ``service_tier``: the tier
        the call asks for (``"priority"``, ``"flex"``...): held at that tier's price where it is
        dearer than the standard one.
        """
        metered = self.open_meter(
            provider=provider, model=model, input_tokens=input_tokens, max_output_tokens=max_output_tokens,
            api=api, operation=operation, budgets=budgets, fingerprint=fingerprint, ttl=ttl,
            service_tier=service_tier,
        )  # fmt: skip
        try:
            yield metered
        except BaseException:
            metered.fail()
            raise
        metered.finish()

    def open_meter(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        api: str | None = None,
        operation: str = "chat",
        budgets: Any = None,
        fingerprint: str | None = None,
        ttl: float | None = None,
        service_tier: str | None = None,
    ) -> Metered:
        """:meth:`meter` without the ``with`` block, for a call that ends elsewhere (a stream closed
        later, by another callback): admit now, then call ``finish()`` or ``fail()`` exactly once."""
        from .budgets import get_engine

        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0
        ):
            raise InvalidInput(f"must be a positive number of seconds, got {ttl!r}", field="ttl")

        engine = budgets or get_engine()
        ctx = current()
        if self.require_tenant and (ctx is None or ctx.tenant is None):
            # Refused now, before the call is made: at record time the provider has billed it
            # already, and an SDK that retries on errors (anthropic's) would make it again.
            raise AttributionMissing(
                f"{operation} on {provider}/{model} has no tenant (outlay.attribute(tenant=...) is missing)"
            )
        scope: object = ctx if ctx is not None else {}
        # A bad tier name is refused now, naming the field, before anything is held or sent.
        tier = Usage(service_tier=service_tier).service_tier if service_tier is not None else None

        def cost_of(name: str) -> Decimal | None:
            return self.catalog.estimate(
                provider=provider,
                model=name,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                service_tier=tier,
            )

        chosen, downgraded = engine.model_for(scope, model, cost_of=cost_of)
        estimate = cost_of(chosen)
        priced = estimate is not None
        if estimate is None:  # no price for the model: unknown is not zero, it holds the fallback
            estimate = self.unpriced_estimate
        reservation = engine.reserve(scope, estimate, model=chosen, fingerprint=fingerprint, ttl=ttl)
        event_id = new_event_id()  # the event's, decided now: a lost call is recorded under it
        journal = self.journal
        if journal is not None:
            try:
                journal.admitted(
                    self, event_id, context=ctx, provider=provider, model=chosen,
                    requested_model=model if downgraded else None, operation=operation,
                    estimate=estimate, priced=priced, reservation=reservation,
                )  # fmt: skip
            except BaseException:
                engine.release(reservation)  # not made: nothing would remember it
                raise
        metered = Metered(
            provider=provider, model=chosen, requested_model=model, downgraded=downgraded, api=api
        )
        metered._admitted = _Admitted(
            self, engine, reservation, ctx, operation, time.perf_counter(), event_id, journal
        )
        return metered

    def mark(self) -> int:
        """A mark covering every event recorded so far, for :meth:`durable_through` (``batching``
        mode: they may still be only buffered; 0 in durable mode, where they are durable)."""
        return self._batcher.accepted if self._batcher is not None else 0

    def durable_through(self, mark: int) -> bool:
        """Whether every event recorded before :meth:`mark` returned ``mark`` is durable."""
        return self._batcher is None or self._batcher.durable >= mark

    def flush(self, timeout: float | None = None) -> None:
        """Make every event recorded so far durable (a no-op in durable mode)."""
        if self._batcher is not None:
            self._batcher.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        if self._batcher is not None:
            self._batcher.close(timeout)

    def abandon(self) -> None:
        """In a forked child: this recorder's buffer and flushing thread are the parent's; never
        drain them from here (at exit either)."""
        if self._batcher is not None:
            self._batcher.abandon()


@dataclass
class Metered:
    """The call inside :meth:`Recorder.meter`: report its response or usage before the block ends."""

    provider: str
    model: str
    requested_model: str
    downgraded: bool
    api: str | None = None
    usage: Usage | None = None
    event: CostEvent | None = field(default=None, repr=False)

    def response(self, body: object) -> None:
        parsed = parse_response(self.provider, body, self.api)
        self.usage = parsed.usage
        if parsed.model:
            self.model = parsed.model

    def set_usage(self, usage: Usage) -> None:
        self.usage = usage

    # -- ending the call (``meter`` does this for you) ---------------------------------------------

    _admitted: _Admitted | None = field(default=None, repr=False, compare=False)
    _ended: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _take(self) -> _Admitted:
        admitted = self._admitted
        if admitted is None:
            raise InvalidInput("this call was not opened by Recorder.open_meter", field="metered")
        if not self._ended.acquire(blocking=False):
            raise InvalidInput("this call has already been finished or failed", field="metered")
        return admitted

    def finish(self, status: str = "ok") -> CostEvent:
        """Record the reported usage and settle the reservation with its cost (once). ``status``
        ``"error"`` records a call that failed after the provider started billing it (a broken
        stream): its usage, even incomplete, is what it cost."""
        admitted = self._take()
        # The call may end elsewhere (a stream closed by a callback, in another thread): a budget
        # decision made as it settles (a soft limit crossed) is recorded in the call's context.
        token = attach(admitted.ctx)
        try:
            return self._finish(admitted, status)
        finally:
            detach(token)

    def _finish(self, admitted: _Admitted, status: str) -> CostEvent:
        latency = (time.perf_counter() - admitted.started) * 1000
        if self.usage is None:
            admitted.engine.release(admitted.reservation)
            if admitted.journal is not None:  # its caller is told: a mistake, not a lost call
                admitted.journal.dropped(admitted.event_id)
            raise InvalidInput(
                "the metered block reported no usage: call metered.response(...) or .set_usage(...)"
            )
        built: CostEvent | None = None
        try:
            built = admitted.recorder.build(
                operation=admitted.operation, provider=self.provider, model=self.model, usage=self.usage,
                context=admitted.ctx, latency_ms=latency, status=status, event_id=admitted.event_id,
            )  # fmt: skip
            event = admitted.recorder.record(built)
        except BaseException:
            # The call was made (and billed) but cannot be recorded: its estimate still counts, and
            # the journal keeps the event (or, with none built, the admission) for the next start.
            admitted.engine.settle(admitted.reservation)
            if admitted.journal is not None and built is not None:
                admitted.journal.unrecorded(built)
            raise
        if admitted.journal is not None:
            admitted.journal.recorded(admitted.recorder, admitted.event_id)
        self.event = event
        # Unpriced: settle the estimate, so unknown spend still counts against the budget.
        admitted.engine.settle(admitted.reservation, event.cost)
        return event

    def fail(self, usage: Usage | None = None, *, may_be_billed: bool = False) -> CostEvent:
        """Record the call as failed (``status="error"``) and release its reservation (once).

        ``usage`` is what the provider billed for the failure (``Usage()`` when it billed nothing,
        as for an error answer); by default whatever usage was reported, else unknown (unpriced).
        ``may_be_billed``: the request reached the provider (a timeout, a connection dropped after
        sending) and its cost is unknown: the budget is charged the estimate instead, since a
        provider bills a generation its client gave up on — unknown is not free.
        """
        admitted = self._take()
        token = attach(admitted.ctx)  # as in finish(): decisions carry the call's context
        try:
            return self._fail(admitted, usage, may_be_billed)
        finally:
            detach(token)

    def _fail(self, admitted: _Admitted, usage: Usage | None, may_be_billed: bool) -> CostEvent:
        latency = (time.perf_counter() - admitted.started) * 1000
        if usage is None:
            if self.usage is not None and not self.usage.is_empty:
                usage = self.usage
            else:
                usage = Usage(complete=False, reason="the call failed before usage was reported")
        built: CostEvent | None = None
        try:
            built = admitted.recorder.build(
                operation=admitted.operation, provider=self.provider, model=self.model, usage=usage,
                context=admitted.ctx, status="error", latency_ms=latency, event_id=admitted.event_id,
            )  # fmt: skip
            event = admitted.recorder.record(built)
        except BaseException:
            admitted.engine.release(admitted.reservation)  # never a hold left until it expires
            if admitted.journal is not None and built is not None:
                admitted.journal.unrecorded(built)  # recorded as it was by the next start
            raise
        if admitted.journal is not None:
            admitted.journal.recorded(admitted.recorder, admitted.event_id)
        self.event = event
        if event.priced and event.cost:
            admitted.engine.settle(admitted.reservation, event.cost)
        elif may_be_billed and not event.priced:
            admitted.engine.settle(admitted.reservation)  # the estimate: unknown is not zero
        else:
            admitted.engine.release(admitted.reservation)
        return event


@dataclass(frozen=True, slots=True)
class _Admitted:
    """What :meth:`Recorder.open_meter` holds for a call until it finishes or fails."""

    recorder: Recorder
    engine: Any  # a BudgetEngine (typed loosely: budgets imports this module's package lazily)
    reservation: Any
    ctx: CostContext | None
    operation: str
    started: float
    event_id: str  # the event's id, decided at admission (the journal notes the call under it)
    journal: MeteredJournal | None
