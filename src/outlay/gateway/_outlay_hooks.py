"""``OutlayHooks``: the gateway's real metering — virtual keys, budgets, and the cost ledger.

Per call: the key names the tenant (401 if missing, unknown or revoked); baggage and ``X-Outlay-*``
headers attribute it within that tenant (403 if they claim another); a soft limit may downgrade the
model; an estimate is reserved (402 over a hard limit, 429 over a cost rate); after the upstream
answered, one :class:`~outlay.CostEvent` is recorded — durably, before a non-streamed answer leaves —
and the reservation is settled with the actual cost (or released when the provider bills nothing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final

from outlay._errors import BackendError, Forbidden, InvalidInput, Unauthenticated
from outlay._journal import AdmissionJournal
from outlay._lost import journal_record, lost_call_event
from outlay._money import MONEY_CONTEXT, ZERO, money_sum
from outlay._recording import UNPRICED_ESTIMATE, Recorder
from outlay._runtime import Outlay
from outlay._usage import Usage, asked_tier
from outlay.budgets import (
    Budget,
    BudgetEngine,
    Decision,
    InMemoryBudgetStore,
    KeyStatus,
    Reservation,
    Scope,
)
from outlay.context import CostContext, attach, current, detach
from outlay.events import CostEvent, decode_event, encode_event, new_event_id
from outlay.events._event import MAX_ID
from outlay.keys import KeyStore, VirtualKey
from outlay.stream import InMemoryEventLog

from ._attribution import attribute
from ._hooks import Admission, Call, Outcome, Principal, Settlement, client_key

__all__ = ["OutlayHooks"]

_log = logging.getLogger("outlay.gateway")

_PROVIDER: Final = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_OUTPUT_FIELDS: Final = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
    "embeddings": (),
}
_CACHE_MAX: Final = 10_000
_HOLD_MARGIN: Final = 60.0  # seconds a hold outlives its call (the completion, a slow store)
_CONVERSATIONS_KEPT: Final = 100_000  # Responses ids whose conversation size is remembered
#: Price version of an upstream error answer: the provider bills nothing for it.
NOT_BILLED: Final = "not-billed:upstream-error"


@dataclass(frozen=True, slots=True)
class _Ticket:
    """What ``complete`` needs of one admitted call (``Admission.reservation``)."""

    context: CostContext
    key: VirtualKey | None
    provider: str
    holds: tuple[Reservation, ...]
    estimate: Decimal
    estimate_priced: bool  # False: the model has no price and ``estimate`` is the fallback
    event_id: str  # the call's event, whether its completion or a recovery records it


_Job = tuple[str, tuple[Any, ...]]  # ("admit" | "complete" | "decide", arguments)
#: A decision kept to be recorded later, elsewhere, with the context of the call it was made for.
_Decided = tuple[Decision, CostContext | None]
_Result = tuple[bool, object]  # (True, value) or (False, exception)
_Orphan = tuple[_Job, _Result, Callable[[_Job, _Result], None]]
_Pending = tuple[_Job, asyncio.Future[_Result], Callable[[_Job, _Result], None] | None]


class _SerialBatches:
    """Blocking work (SQLite budget transactions, durable appends) on one thread, in batches.

    A job submitted while a batch runs joins the next one, so N concurrent requests cost one
    thread hop per batch, and their events one durable commit — not N hops, N fsyncs and N threads
    fighting for the GIL and the store's lock. The lists are touched only on the event loop, and a
    job costs one plain future (no task, no shield): this runs twice per request.
    """

    def __init__(self, run: Callable[[Sequence[_Job]], list[_Result]]) -> None:
        self._run = run
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outlay-gateway-io")
        self._pending: list[_Pending] = []
        self._orphans: list[_Orphan] = []
        self._busy = False

    def submit(
        self, job: _Job, orphaned: Callable[[_Job, _Result], None] | None = None
    ) -> asyncio.Future[_Result]:
        """The future ``(True, value)`` or ``(False, exception)`` of ``job``, run in the next batch.

        Once submitted the job runs to the end, even if the future is cancelled (its caller was);
        ``orphaned`` then gets the job's result, on the blocking thread, in a later batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result] = loop.create_future()
        self._pending.append((job, future, orphaned))
        if not self._busy:
            self._busy = True
            self._launch(loop)
        return future

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        orphans, self._orphans = self._orphans, []
        done = self._executor.submit(self._work, [job for job, _, _ in batch], orphans)
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, loop, batch, f))

    def _work(self, jobs: Sequence[_Job], orphans: Sequence[_Orphan]) -> list[_Result]:
        for job, result, handler in orphans:
            with contextlib.suppress(Exception):
                handler(job, result)
        return self._run(jobs) if jobs else []

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: Sequence[_Pending],
        done: concurrent.futures.Future[list[_Result]],
    ) -> None:
        error = done.exception()
        results: list[_Result] = done.result() if error is None else [(False, error)] * len(batch)
        for (job, future, orphaned), result in zip(batch, results, strict=True):
            if not future.cancelled():
                future.set_result(result)
            elif orphaned is not None:
                self._orphans.append((job, result, orphaned))
        if self._pending or self._orphans:
            self._launch(loop)
        else:
            self._busy = False

    @property
    def idle(self) -> bool:
        """No batch is running or waiting to run."""
        return not self._busy

    async def aclose(self) -> None:
        while self._busy:  # batches in flight, and what joined them, finish first
            await asyncio.sleep(0.005)
        await asyncio.to_thread(self._executor.shutdown, True)


class _WouldWait(Exception):
    """An inline completion found the event log busy: the blocking thread takes the call instead."""


def _output_tokens(call: Call, default: int) -> tuple[int, bool]:
    """The most output the call may produce, from the request (``n`` choices count n times), and
    whether the request said so (else it is ``default``, which bounds nothing)."""
    body = call.body
    given = True
    for name in _OUTPUT_FIELDS[call.api]:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"expected a non-negative integer, got {value!r}", field=name)
        break
    else:
        value, given = (0, True) if call.api == "embeddings" else (default, False)
    choices = body.get("n")
    if call.api == "chat" and choices is not None:
        # A lax upstream (pydantic's coercion: vLLM, most self-hosted servers) serves "5" as 5
        # choices: anything but a whole number would be held as one and could overshoot a limit.
        if isinstance(choices, bool) or not isinstance(choices, int) or choices < 1:
            raise InvalidInput(f"expected a positive integer, got {choices!r}", field="n")
        value *= choices
    return value, given


def _asked_tier(call: Call) -> str | None:
    """The non-standard service tier the request asks for (see ``asked_tier``)."""
    return asked_tier(call.body.get("service_tier")) if call.api != "embeddings" else None


def _whole_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _tool_uses(call: Call) -> tuple[int, int]:
    """``(web searches, file searches)`` the request lets the provider run — billed per use, beyond
    tokens. Responses ``max_tool_calls`` bounds them (each kind may take all of it); an Anthropic
    web search tool its ``max_uses``; without a bound, one per tool (which bounds nothing)."""
    tools = call.body.get("tools") if call.api in ("responses", "messages") else None
    if not isinstance(tools, list):
        return 0, 0
    web = files = 0
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            continue
        if kind.startswith("web_search"):  # web_search, web_search_preview, web_search_20250305, ...
            uses = _whole_count(tool.get("max_uses")) if call.api == "messages" else None
            web += 1 if uses is None else uses
        elif kind == "file_search" and call.api == "responses":
            files += 1
    bound = _whole_count(call.body.get("max_tool_calls")) if call.api == "responses" else None
    if bound is not None:
        web, files = (bound if web else 0), (bound if files else 0)
    return web, files


class OutlayHooks:
    """The :class:`GatewayHooks` of a real deployment.

    ``keys`` resolves virtual keys (a positive lookup is cached ``cache_ttl`` seconds, so a
    revocation takes effect within that time on every worker). ``outlay`` (or ``recorder``) records
    events; ``engine`` enforces budgets (the key's own budget is added to the engine's policies).
    Calls whose price is unknown reserve and, unless usage says otherwise, are charged
    ``unpriced_estimate``; requests without an output limit are estimated at ``default_output_tokens``,
    which bounds nothing unless ``cap_output`` is true: then such a request (chat or Responses) is
    sent upstream with that limit, so its hold is a worst case and a hard limit holds under
    concurrency (answers longer than the limit end with ``finish_reason="length"``).

    Blocking work (a durable append, a SQLite budget transaction) runs on one thread, in batches, so
    the event loop keeps serving and concurrent appends share one fsync; with in-memory backends it
    runs inline (``offload`` overrides the choice). An admission runs on the loop when the budget
    store can begin at once (:meth:`BudgetStore.try_batch`), and joins a batch when it cannot; so
    does a completion when no other admitted call awaits its own. Call :meth:`complete` once for
    every admission that succeeded (the gateway does, even for a cancelled request): it settles
    the hold, and the count of calls in flight depends on it.
    """

    def __init__(
        self,
        keys: KeyStore,
        *,
        outlay: Outlay | None = None,
        recorder: Recorder | None = None,
        engine: BudgetEngine | None = None,
        default_output_tokens: int = 1024,
        cap_output: bool = False,
        unpriced_estimate: Decimal = UNPRICED_ESTIMATE,
        environment: str = "production",
        cache_ttl: float = 1.0,
        offload: bool | None = None,
        owned: bool = False,
        journal: AdmissionJournal | None = None,
    ) -> None:
        if recorder is None:
            if outlay is None:
                raise InvalidInput("pass outlay= (or recorder=) to record events", field="outlay")
            recorder = outlay.recorder
        self.keys = keys
        self.outlay = outlay
        self.recorder = recorder
        self.catalog = recorder.catalog
        self.engine = engine if engine is not None else BudgetEngine()
        if outlay is not None and self.engine.decision_sink is None:
            outlay.install_decision_sink(self.engine)  # refusals and downgrades land in the ledger
        self.default_output_tokens = default_output_tokens
        self.cap_output = cap_output
        self.unpriced_estimate = unpriced_estimate
        self.environment = environment
        self.cache_ttl = cache_ttl
        self.owned = owned
        self.journal = journal
        if offload is None:
            memory = isinstance(recorder.log, InMemoryEventLog) or recorder.mode == "batching"
            offload = not (memory and isinstance(self.engine.store, InMemoryBudgetStore))
        self._batches = _SerialBatches(self._run_batch) if offload else None
        # Admissions run on the event loop when the budget store can begin at once (no hand-off to
        # the blocking thread and back); the decisions they make (a refusal, a downgrade) are then
        # recorded by that thread, before the answer leaves.
        self._deferred = threading.local()
        # response id -> (its context tokens, the tenant whose call made it)
        self._conversations: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self._sink = self.engine.decision_sink
        if self._batches is not None and self._sink is not None:
            self.engine.decision_sink = self._defer_on_loop
        self._inflight = 0  # calls admitted (or being admitted) and not yet completed
        # (batching recorder) calls recorded, not yet durable: (the recorder's mark, event ids)
        self._undurable: deque[tuple[int, Sequence[str]]] = deque()
        self._undurable_lock = threading.Lock()
        if self.journal is not None and self.recorder.mode == "batching":
            # Calls waiting for their buffer are noted done as it reaches the log, not at the next
            # completion: a kill while the gateway sat idle would re-record them as lost.
            self.recorder.on_durable(lambda: self._journal_recorded(()))
        self._cache: dict[str, tuple[VirtualKey, float]] = {}
        self._contexts: dict[str, CostContext] = {}
        self._scopes: dict[int, Scope] = {}  # the budget Scope of each cached key context
        self._estimates: dict[tuple[str, str, int, int, str | None], tuple[Decimal | None, float]] = {}

    async def aclose(self) -> None:
        """Finish blocking work in flight, then (``owned``) close the key store and the pipeline."""
        if self._batches is not None:
            await self._batches.aclose()
        if self.journal is not None:
            if self._undurable:
                try:  # (batching) what is buffered, durable before the journal forgets it
                    await asyncio.to_thread(self.recorder.flush, 30.0)
                    self._journal_recorded(())
                except Exception:  # the file stays: the next start records them (same event ids)
                    _log.exception("outlay: recorded calls could not be made durable at shutdown")
            self.journal.close()
        if self.owned:
            self.keys.close()
            if self.outlay is not None:
                self.outlay.close()

    def recover_lost_calls(self) -> int:
        """Record the calls that gateway processes now gone (killed, crashed) admitted and never
        recorded, from their admission journals; returns how many. Each is one ``estimated``
        event under the id its completion would have had (so never counted twice, however often
        this runs), and its hold is charged now rather than at its expiry. Blocking: call it at
        start (``create_app`` does), before serving."""
        if self.journal is None:
            return 0
        count = 0
        for path, records in self.journal.orphans():
            built: list[tuple[dict[str, Any], CostEvent]] = []
            for record in records:
                try:
                    # An event the log refused is recorded as it was (its hold settled then).
                    event = decode_event(record["event"]) if "event" in record else None
                    built.append((record, event or lost_call_event(self.recorder, record)))
                except Exception:  # (a line written by another version, say): the others count
                    _log.exception("outlay: cannot record the lost call %r", record)
            # Durable, or this raises and the file stays for the next start.
            self.recorder.record_many([event for _, event in built])
            self.recorder.flush()  # (batching mode: durable before the journal is deleted)
            for record, event in built:
                if "event" in record:
                    continue
                amount = Decimal(record["estimate"])
                for hold_id in record["holds"]:
                    # Charged its hold (one expired meanwhile is charged already, a settled one done).
                    try:
                        self.engine.store.settle(hold_id, amount)
                    except InvalidInput:
                        pass  # a store that forgot it (in memory, or past its retention)
                    except Exception:
                        _log.exception("outlay: charging the hold of lost call %s failed", event.event_id)
                _log.warning(
                    "outlay: recorded call %s (tenant %s, %s) admitted by a gateway process that stopped"
                    " before recording it, at %s",
                    event.event_id, event.tenant_id, event.model,
                    event.cost if event.priced else "(unpriced)",
                )  # fmt: skip
            self.journal.forget(path)
            count += len(built)
        return count

    def _run_batch(self, jobs: Sequence[_Job]) -> list[_Result]:
        """Run a batch of jobs on the blocking thread: completions first (they free budget), their
        events in one durable append, then admissions in arrival order."""
        results: list[_Result] = [(False, RuntimeError("not run"))] * len(jobs)
        completions = [(i, job[1]) for i, job in enumerate(jobs) if job[0] == "complete"]
        try:
            with self.engine.store.batch():  # SQLite: one transaction for the batch's budget work
                if completions:
                    self._complete_many(completions, results)
                for i, (kind, args) in enumerate(jobs):
                    if kind == "admit":
                        try:
                            results[i] = (True, self._admit(*args))
                        except Exception as exc:
                            results[i] = (False, exc)
                    elif kind == "decide":
                        self._record_decisions(*args)
                        results[i] = (True, None)
        except Exception as exc:
            # The budget transaction failed to commit: its holds and settles are undone (the
            # events already appended stay recorded; their holds lapse at their TTL), and every
            # call of the batch is answered with the error rather than a silent success.
            return [(False, exc)] * len(jobs)
        return results

    def _estimate(
        self, provider: str, model: str, input_tokens: int, output_tokens: int, tier: str | None = None
    ) -> Decimal | None:
        """The catalog's worst case (at the asked-for ``tier``'s price when it has one), memoised:
        input is rounded *up* to 1/16 of its magnitude (at most 6.25% more, so still a worst case)
        to make the cache hit, and entries expire after a minute so a price taking effect is
        picked up."""
        step = 1 << max(0, input_tokens.bit_length() - 4)
        rounded = -(-input_tokens // step) * step
        now = time.monotonic()
        cache_key = (provider, model, rounded, output_tokens, tier)
        hit = self._estimates.get(cache_key)
        if hit is not None and hit[1] > now:
            return hit[0]
        value = self.catalog.estimate(
            provider=provider,
            model=model,
            input_tokens=rounded,
            max_output_tokens=output_tokens,
            service_tier=tier,
        )
        if len(self._estimates) >= _CACHE_MAX:
            self._estimates.clear()
        self._estimates[cache_key] = (value, now + 60.0)
        return value

    def _with_tools(
        self, provider: str, model: str, estimate: Decimal | None, uses: tuple[int, int]
    ) -> Decimal | None:
        """``estimate`` plus what the searches the request allows cost (web search ~$10 per
        thousand: far more than a small model's tokens), so concurrent calls that search cannot
        overshoot a hard limit by a multiple of concurrency. A search the catalog has no price for
        holds ``unpriced_estimate``."""
        web, files = uses
        if estimate is None or not (web or files):
            return estimate
        units = {"storage_searches": Decimal(files)} if files else {}
        with_tools = self.catalog.rate(Usage(web_searches=web, units=units), provider=provider, model=model)
        if with_tools.cost is None:
            return money_sum((estimate, self.unpriced_estimate))
        base = self.catalog.rate(Usage(), provider=provider, model=model).cost or ZERO
        return money_sum((estimate, with_tools.cost, -base))

    # -- authenticate -----------------------------------------------------------------------------

    def _lookup(self, secret: str) -> VirtualKey | None:
        now = time.monotonic()
        hit = self._cache.get(secret)
        if hit is not None and hit[1] > now:
            return hit[0]
        key = self.keys.lookup(secret)
        if key is not None and self.cache_ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # bounded: unknown keys are never cached, live ones come back
            self._cache[secret] = (key, now + self.cache_ttl)
        return key

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        secret = client_key(headers)
        if secret is None:
            raise Unauthenticated(
                "missing API key: send your outlay key as 'Authorization: Bearer <key>' or 'x-api-key'",
                reason="missing",
            )
        key = self._lookup(secret) if len(secret) <= 256 else None
        if key is None:
            raise Unauthenticated("unknown API key", reason="unknown")
        if key.revoked:
            raise Unauthenticated(f"API key {key.prefix}... has been revoked", reason="revoked")
        return Principal(key.tenant, key_id=key.id, workspace_id=key.workspace, policies={"key": key})

    # -- admit ------------------------------------------------------------------------------------

    def _context(
        self, principal: Principal, key: VirtualKey | None, headers: Mapping[str, str]
    ) -> CostContext:
        default = self._contexts.get(principal.key_id or "") if key is not None else None
        if default is None and key is not None:
            default = CostContext(
                tenant=key.tenant, workspace=key.workspace, feature=key.feature, environment=self.environment
            )
            if len(self._contexts) >= _CACHE_MAX:
                self._contexts.clear()
                self._scopes.clear()
            self._contexts[key.id] = default
            self._scopes[id(default)] = Scope.of(default)  # kept alive by _contexts
        feature = key.feature if key is not None else None
        return attribute(
            principal.tenant_id, principal.workspace_id, feature, headers,
            environment=self.environment, default=default,
        )  # fmt: skip

    async def admit(self, principal: Principal, call: Call) -> Admission:
        self._inflight += 1
        try:
            admission = await self._admit_call(principal, call)
            if self.journal is not None:
                self._journal_admitted(admission)
            return admission
        except BaseException:
            self._inflight -= 1  # refused, failed or cancelled: there will be no completion
            raise

    async def _admit_call(self, principal: Principal, call: Call) -> Admission:
        found = principal.policies.get("key")
        key = found if isinstance(found, VirtualKey) else None
        ctx = self._context(principal, key, call.headers)
        provider = _PROVIDER.get(call.upstream.kind) or call.upstream.name.lower()
        output, given = _output_tokens(call, self.default_output_tokens)
        limit = self.default_output_tokens if self.cap_output and not given else None
        args = (principal, call, ctx, (key, provider, output, limit))
        if self._batches is None:
            return self._admit(*args)
        inline = self._admit_inline(args)
        if inline is not None:
            (ok, admission), decisions = inline
            if decisions:  # durable before the caller hears of them, as on the blocking thread
                await self._batches.submit(("decide", (decisions,)))
        else:
            ok, admission = await self._batches.submit(("admit", args), self._orphaned)
        if not ok:
            assert isinstance(admission, BaseException)
            raise admission
        assert isinstance(admission, Admission)
        return admission

    def _journal_admitted(self, admission: Admission) -> None:
        """Note the call in the admission journal before it goes upstream: a process killed during
        the call leaves it there, to be recorded by the next start. A call the journal cannot
        note is refused (503) and its hold given back: nothing would remember it."""
        ticket = admission.reservation
        assert isinstance(ticket, _Ticket)
        assert self.journal is not None
        record = journal_record(
            context=ticket.context, key_id=ticket.key.id if ticket.key is not None else None,
            provider=ticket.provider, model=admission.model, requested_model=admission.downgraded_from,
            operation="embedding" if admission.call.api == "embeddings" else "chat",
            estimate=ticket.estimate, priced=ticket.estimate_priced, holds=ticket.holds,
        )  # fmt: skip
        try:
            self.journal.admitted(ticket.event_id, record)
        except BaseException:
            self._release_all(ticket)
            raise

    def _admit_inline(self, args: tuple[Any, ...]) -> tuple[_Result, list[_Decided]] | None:
        """The admission, run here in a budget transaction that could begin without waiting; None
        when it could not (the blocking thread or another process holds the store)."""
        decisions: list[_Decided] = []
        with self.engine.store.try_batch() as began:
            if not began:
                return None
            self._deferred.decisions = decisions
            try:
                result: _Result = (True, self._admit(*args))
            except Exception as exc:  # a refusal: the transaction commits what it did (nothing)
                result = (False, exc)
            finally:
                self._deferred.decisions = None
        return result, decisions

    def _defer_on_loop(self, decision: Decision) -> None:
        """The engine's decision sink: kept for later on an inline admission, else passed on."""
        kept: list[_Decided] | None = getattr(self._deferred, "decisions", None)
        if kept is not None:
            # With the call's context, which the blocking thread that records it does not have.
            kept.append((decision, current()))
        elif self._sink is not None:
            self._sink(decision)

    def _record_decisions(self, decisions: Sequence[_Decided]) -> None:
        for decision, ctx in decisions:
            if self._sink is None:
                return
            token = attach(ctx)  # the event carries the call's attribution (environment, feature, run)
            try:
                self._sink(decision)
            except Exception:  # the decision stands even if recording it failed, as in the engine
                _log.exception("outlay: the decision sink failed for %s", decision.kind)
            finally:
                detach(token)

    def _orphaned(self, job: _Job, result: _Result) -> None:
        """A job whose caller was cancelled while it ran: an admission nobody will complete gives
        its holds back now rather than at their TTL (runs on the blocking thread's next batch)."""
        ok, value = result
        if (
            job[0] == "admit"
            and ok
            and isinstance(value, Admission)
            and isinstance(value.reservation, _Ticket)
        ):
            self._release_all(value.reservation)

    def _admit(
        self,
        principal: Principal,
        call: Call,
        ctx: CostContext,
        how: tuple[VirtualKey | None, str, int, int | None],  # key, provider, max output, limit to add
    ) -> Admission:
        key, provider, output, limit = how
        token = attach(ctx)  # so budget decisions recorded now carry the call's attribution
        try:
            scope = self._scopes.get(id(ctx)) or Scope.of(ctx)
            tokens = max(1, len(call.raw) // 4) + self._stored_context(call, principal.tenant_id)
            uses = _tool_uses(call)
            tier = _asked_tier(call)

            def cost_of(name: str) -> Decimal | None:
                estimate = self._estimate(provider, name, tokens, output, tier)
                return self._with_tools(provider, name, estimate, uses)

            model, downgraded = self.engine.model_for(scope, call.model, cost_of=cost_of)
            estimate = cost_of(model)
            priced = estimate is not None
            amount = estimate if estimate is not None else self.unpriced_estimate
            # Identical repeated bodies within a run trip its retry-storm guard.
            fp = hashlib.sha256(call.raw).hexdigest() if ctx.run_id is not None else None
            # The hold outlives the call (which the gateway ends by max_seconds): a hold that
            # expired under a long stream would let other calls take what this one still spends.
            holds = self._reserve(scope, key, amount, model, fp, call.max_seconds + _HOLD_MARGIN)
        finally:
            detach(token)
        ticket = _Ticket(ctx, key, provider, holds, amount, priced, new_event_id())
        known, left = self._remaining(holds, {st.key: st for h in holds for st in h.admitted})
        return Admission(
            principal, call, model, reservation=ticket, reserved=amount, budget_remaining=left,
            downgraded_from=call.model if downgraded else None, output_limit=limit, budget_known=known,
        )  # fmt: skip

    def _reserve(
        self, scope: Scope, key: VirtualKey | None, amount: Decimal, model: str, fp: str | None, ttl: float
    ) -> tuple[Reservation, ...]:
        own = key.policies if key is not None else ()
        tenant_wide = [p for p in own if p.scope != "feature"]
        per_feature: list[Budget] = [p for p in own if p.scope == "feature"]
        # The key's feature budget counts on a tenant-qualified counter (two tenants may both have
        # a "chat" feature): the same hold, so one store transaction takes both, all or nothing.
        # Held *with* the tenant, so the counter is feature:<tenant>:<tenant>/<feature>: kept by the
        # id alone it would be the counter of a shared policy on a feature any tenant may name
        # "<tenant>/<feature>" in a header, spending (and reading) this tenant's budget.
        also = (
            ((Scope(tenant=key.tenant, feature=key.feature_key), per_feature),)
            if per_feature and key is not None
            else ()
        )
        hold = self.engine.reserve(
            scope, amount, budgets=tenant_wide, also=also, model=model, fingerprint=fp, ttl=ttl
        )
        return (hold,)

    def _remaining(
        self, holds: tuple[Reservation, ...], seen: Mapping[str, KeyStatus] | None = None
    ) -> tuple[bool, Decimal | None]:
        """Whether it is known, and what the tightest hard limit of the call still allows (None: no
        hard limit), from the counters the store returned with the reservation or settlement
        (``seen``, by counter key) — no second read on the hot path; a counter not in ``seen`` is
        read. A counter that cannot be read (the store unreachable: a call admitted or settled
        without it) makes the figure unknown: no header, never a failed call."""
        best: Decimal | None = None
        for hold in holds:
            # A shared budget counts every tenant's calls: what it has left tells one tenant what
            # the others spent, so it is left out of the header.
            shared = {counter for policy, _, counter in hold.policies if policy.shared}
            for limit in hold.keys:
                if limit.limit is None or limit.key in shared:
                    continue
                status = seen.get(limit.key) if seen is not None else None
                if status is None:
                    try:
                        status = self.engine.store.status(limit.key, limit.window)
                    except BackendError:
                        return False, None
                left = MONEY_CONTEXT.subtract(
                    MONEY_CONTEXT.subtract(limit.limit, status.spent), status.reserved
                )
                left = max(ZERO, left)
                best = left if best is None or left < best else best
        return True, best

    # -- complete ---------------------------------------------------------------------------------

    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        try:
            usage = outcome.usage
            if outcome.response_id and usage is not None and usage.complete:
                # What a later call chaining previous_response_id will be billed for again.
                self._remember_conversation(
                    outcome.response_id,
                    usage.input_tokens + usage.output_tokens,
                    admission.principal.tenant_id,
                )
            return await self._complete(admission, outcome)
        finally:
            self._inflight -= 1

    def _remember_conversation(self, response_id: str, tokens: int, tenant: str | None) -> None:
        conversations = self._conversations
        conversations[response_id] = (tokens, tenant)
        conversations.move_to_end(response_id)
        while len(conversations) > _CONVERSATIONS_KEPT:
            conversations.popitem(last=False)

    def _stored_context(self, call: Call, tenant: str | None) -> int:
        """Tokens of the stored conversation a Responses call continues (``previous_response_id``):
        the provider bills them as input again. 0 when unknown to this process.

        Every tenant's calls go upstream with the gateway's one key, so the provider would let any
        tenant continue — and read back — another's stored conversation: a response this process
        made for another tenant is refused (403), never forwarded."""
        previous = call.body.get("previous_response_id") if call.api == "responses" else None
        known = self._conversations.get(previous) if isinstance(previous, str) else None
        if known is None:
            return 0
        tokens, owner = known
        if owner != tenant:
            raise Forbidden(
                f"previous_response_id {previous!r} belongs to another tenant's conversation",
                reason="foreign_response",
            )
        return tokens

    async def _complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        ticket = admission.reservation
        if not isinstance(ticket, _Ticket):
            return Settlement()
        job: _Job = ("complete", (admission, ticket, outcome))
        if self._batches is None:
            ok, value = self._run_batch([job])[0]
        else:
            # Alone (no other call of this process in flight, the blocking thread idle), the
            # completion runs here if both stores can begin at once: the loop delays nobody by
            # waiting on the fsync itself, and the call saves two hand-offs between threads.
            inline = self._complete_inline(job) if self._inflight <= 1 and self._batches.idle else None
            if inline is not None:
                (ok, value), decisions = inline
                if decisions:  # durable before the caller hears of them, as on the blocking thread
                    await self._batches.submit(("decide", (decisions,)))
            else:
                # Not cancellable half-way: once handed over, the call is recorded and settled.
                ok, value = await self._batches.submit(job)
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        assert isinstance(value, Settlement)
        return value

    def _complete_inline(self, job: _Job) -> tuple[_Result, list[_Decided]] | None:
        """The completion, run here in a budget transaction that could begin without waiting, with
        an append that could too; None (nothing recorded or settled) when either would wait."""
        decisions: list[_Decided] = []
        results: list[_Result] = [(False, RuntimeError("not run"))]
        with self.engine.store.try_batch() as began:
            if not began:
                return None
            self._deferred.decisions = decisions
            try:
                self._complete_many([(0, job[1])], results, self._append_now)
            except _WouldWait:
                return None  # the transaction wrote nothing: its commit is empty
            finally:
                self._deferred.decisions = None
        return results[0], decisions

    def _append_now(self, events: Sequence[CostEvent]) -> None:
        if not self.recorder.try_record_many(events):
            raise _WouldWait

    def _complete_many(
        self,
        items: Sequence[tuple[int, tuple[Admission, _Ticket, Outcome]]],
        results: list[_Result],
        append: Callable[[Sequence[CostEvent]], None] | None = None,
    ) -> None:
        """Record the calls' events in one durable append (invariant 3: before any answer leaves),
        then settle each hold with its actual cost — or release it when the provider bills nothing.
        Whatever happens to the append, no hold lingers until its TTL; a settlement that fails
        after the call was recorded is logged, not turned into an error for a call that happened."""
        built: list[tuple[int, _Ticket, CostEvent, bool]] = []
        for i, (admission, ticket, outcome) in items:
            try:
                event, bill = self._event(admission, ticket, outcome)
            except Exception as exc:
                results[i] = (False, exc)
                self._release_all(ticket)
                if self.journal is not None:  # answered with the error, as before the journal
                    self.journal.recorded(ticket.event_id)
                continue
            built.append((i, ticket, event, bill))
        failure: Exception | None = None
        try:
            (append or self.recorder.record_many)([event for _, _, event, _ in built])
        except _WouldWait:
            raise
        except Exception as exc:
            failure = exc
        if self.journal is not None:
            if failure is None:  # recorded: nothing left to recover
                self._journal_recorded([ticket.event_id for _, ticket, _, _ in built])
            else:  # the event itself stays in the journal, for the next start to record
                for _, ticket, event, _ in built:
                    self.journal.unrecorded(ticket.event_id, encode_event(event))
        for i, ticket, event, bill in built:
            seen: dict[str, KeyStatus] = {}
            settled = True
            token = attach(ticket.context)  # so budget decisions made now carry the call's attribution
            try:
                for hold in ticket.holds:
                    if bill:
                        _, statuses = self.engine.settle_status(hold, event.cost if event.priced else None)
                        seen.update((st.key, st) for st in statuses)
                    else:
                        self.engine.release(hold)
            except Exception:
                # The call happened and is recorded: failing it now would invite a retry the
                # provider bills again. The hold stands until its TTL; the operator hears of it.
                _log.exception(
                    "outlay: settling the hold of event %s failed; it lapses at its TTL", event.event_id
                )
                settled = False  # what is left is unknown: no figure rather than a wrong one
            finally:
                detach(token)
            if failure is not None:
                results[i] = (False, failure)
                continue
            cost = event.cost if event.priced else None
            known, left = self._remaining(ticket.holds, seen) if settled else (False, None)
            results[i] = (True, Settlement(cost, left, known))

    def _journal_recorded(self, event_ids: Sequence[str]) -> None:
        """Tell the journal these calls' events are recorded — once they are durable. A batching
        recorder has only buffered them: were the journal told now, a kill before the buffer
        reaches the log would lose the calls the journal exists to keep. So they wait for it."""
        assert self.journal is not None
        if self.recorder.mode != "batching":
            for event_id in event_ids:
                self.journal.recorded(event_id)
            return
        with self._undurable_lock:
            if event_ids:
                self._undurable.append((self.recorder.mark(), event_ids))
            while self._undurable and self.recorder.durable_through(self._undurable[0][0]):
                for event_id in self._undurable.popleft()[1]:
                    self.journal.recorded(event_id)

    def _release_all(self, ticket: _Ticket) -> None:
        for hold in ticket.holds:
            with contextlib.suppress(Exception):
                self.engine.release(hold)

    def _event(self, admission: Admission, ticket: _Ticket, outcome: Outcome) -> tuple[CostEvent, bool]:
        """The call's event, and whether it is billed (settled) or not (released)."""
        call, key = admission.call, ticket.key
        # gateway.* labels are the gateway's word on the call: a client's own (baggage) are dropped.
        labels = {k: v for k, v in ticket.context.labels.items() if not k.startswith("gateway.")}
        if key is not None:
            labels["gateway.key"] = key.id
        if admission.downgraded_from is not None:
            labels["gateway.requested_model"] = admission.downgraded_from
        if outcome.error:
            labels["gateway.error"] = outcome.error[:200]
        if outcome.status >= 400 or outcome.client_disconnected:
            labels["gateway.status"] = "499" if outcome.client_disconnected else str(outcome.status)
        model = admission.model
        reported = outcome.model
        if reported and reported != model:
            if type(reported) is str and len(reported) <= MAX_ID and reported.isprintable():
                model = reported
            else:
                # A name no event can hold (too long, control characters): the billed call is
                # recorded under the model it was sent to, and what the provider said is kept.
                labels["gateway.reported_model"] = ascii(reported)[:200]
        common: dict[str, Any] = {
            "operation": "embedding" if call.api == "embeddings" else "chat",
            "provider": ticket.provider,
            "model": model,
            "context": ticket.context,
            "latency_ms": outcome.latency_s * 1000,
            "labels": labels,
            "event_id": ticket.event_id,
        }
        usage = outcome.usage
        if usage is not None and usage.complete and usage.is_empty and outcome.status >= 400:
            # An error answer (or a request that never left): OpenAI and Anthropic do not bill
            # failed requests (4xx/5xx), so this is a known zero — priced, cost 0 — not an unknown.
            event = self.recorder.build(usage=Usage(), status="error", cost=ZERO, **common)
            return replace(event, price_version=NOT_BILLED), False
        if usage is not None and usage.complete:
            status = "ok" if outcome.status < 400 else "error"
            return self.recorder.build(usage=usage, status=status, **common), True
        # Unknown or a lower bound (timeout after sending, stream cut, client gone, 2xx without
        # usage): the provider may have billed more than we saw. Bill the larger of what was seen
        # and the reservation's worst-case estimate, flagged "estimated" — never zero.
        seen = usage or Usage(complete=False, reason=outcome.error or "usage unknown")
        event = self.recorder.build(usage=seen, status="estimated", **common)
        if (
            not ticket.estimate_priced
            or event.price_version is None
            or (
                event.unpriced_reason is not None and not event.unpriced_reason.startswith("usage incomplete")
            )
        ):
            return (
                event,
                True,
            )  # no price at all: stays unpriced with its reason; the budget gets the fallback
        lower = money_sum(event.cost_breakdown.values())
        cost = max(lower, ticket.estimate)
        labels["gateway.estimate"] = "max(lower bound seen, reserved worst case)"
        return replace(event, priced=True, cost=cost, unpriced_reason=None, labels=labels), True
