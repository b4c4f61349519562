"""The simulated platform's plumbing: a deterministic clock, and the billable calls its agents make.

Every call goes through the real pipeline: a provider response body to ``record_llm`` (real usage
extraction, real rating), custom units to ``record_tool``/``record_usage``, budget admission through
``outlay.budgets`` — on an :class:`outlay.Outlay` the caller owns. Sizes come from a seeded
``random.Random``, times from a :class:`Clock` on a fixed base date, so one seed gives the same
events (ids aside) and the same totals to the last digit.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Final

from outlay import budgets
from outlay._money import MONEY_CONTEXT, ZERO
from outlay._runtime import Outlay, decision_event
from outlay.context import current
from outlay.events import CostEvent
from outlay.providers import declare_provider

from ._responses import anthropic_message, gemini_response, openai_chat, openai_embeddings

__all__ = ["DAYS", "MODELS", "START", "Calls", "Clock", "Platform"]

#: The simulated month: February 2026, whole UTC days, so report windows never move.
START: Final = datetime(2026, 2, 1, tzinfo=UTC)
DAYS: Final = 28

#: Model names as the apps ask for them -> (provider, the model id the provider reports back).
MODELS: Final[dict[str, tuple[str, str]]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-08-06"),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
    "o3": ("openai", "o3-2025-04-16"),
    "claude-sonnet-4-5": ("anthropic", "claude-sonnet-4-5-20250929"),
    "gemini-2.5-pro": ("google", "gemini-2.5-pro"),
    "gemini-2.5-flash": ("google", "gemini-2.5-flash"),
    # A tenant's fine-tune served by the platform's own vLLM (OpenAI wire format); it has no price.
    "legal-ft-v2": ("vllm", "legal-ft-v2"),
}
EMBEDDING_MODEL: Final = "text-embedding-3-small"
SELF_HOSTED: Final = ("self-hosted", "llama-3.1-70b")
_GPUS: Final = 8  # the self-hosted model runs on an 8-GPU node: GPU-seconds = 8 x wall seconds


class Clock:
    """Simulated time: starts at ``start`` and moves forward a few seconds per call."""

    def __init__(self, start: datetime, rng: Random) -> None:
        self.now = start
        self._rng = rng

    @classmethod
    def on_day(cls, day: int, rng: Random, *, hour: int | None = None) -> Clock:
        """A clock at a (random, unless ``hour`` is given) time of day ``day`` of the month."""
        seconds = hour * 3600 if hour is not None else rng.randint(7 * 3600, 21 * 3600)
        return cls(START + timedelta(days=day, seconds=seconds), rng)

    def tick(self) -> datetime:
        moment = self.now
        self.now = moment + timedelta(milliseconds=self._rng.randint(800, 15_000))
        return moment


class Platform:
    """What the simulation shares: the outlay pipeline and a tally of every event it recorded."""

    def __init__(self, outlay: Outlay) -> None:
        declare_provider(MODELS["legal-ft-v2"][0], like="openai")  # a no-op when already declared
        self.outlay = outlay
        self.events = 0
        self.unpriced_events = 0
        self.recorded_cost = ZERO
        self.spend: dict[str | None, Decimal] = {}
        self.root_runs: list[str] = []
        self.decisions: list[CostEvent] = []
        self._pending: list[budgets.Decision] = []
        self._lock = threading.Lock()  # the queue worker records from its own thread

    def account(self, event: CostEvent) -> CostEvent:
        with self._lock:
            self.events += 1
            if not event.priced or event.cost is None:
                self.unpriced_events += 1
                return event
            self.recorded_cost = MONEY_CONTEXT.add(self.recorded_cost, event.cost)
            tenant = event.tenant_id
            self.spend[tenant] = MONEY_CONTEXT.add(self.spend.get(tenant, ZERO), event.cost)
        return event

    def tenant_spend(self, tenant: str) -> Decimal:
        with self._lock:
            return self.spend.get(tenant, ZERO)

    # -- budget decisions -------------------------------------------------------------------------

    def on_decision(self, decision: budgets.Decision) -> None:
        """The budget engine's ``decision_sink``: kept until the caller stamps it with simulated time."""
        with self._lock:
            self._pending.append(decision)

    def record_decisions(self, clock: Clock) -> None:
        """Record pending decisions as zero-cost ledger events (``operation="decision:<kind>"``)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for decision in pending:
            event = decision_event(replace(decision, time=clock.tick()))
            self.decisions.append(self.account(self.outlay.record(event)))


class Calls:
    """The billable calls of one agent: sizes from ``rng``, times from ``clock``.

    With ``admission=True`` every LLM call is admitted by the budget engine first (reserve an
    estimate, call, settle the actual cost), which is what enforces a run's ``Budget``.
    """

    def __init__(self, platform: Platform, rng: Random, clock: Clock, *, admission: bool = False) -> None:
        self.platform = platform
        self.outlay = platform.outlay
        self.rng = rng
        self.clock = clock
        self.admission = admission

    def _pct(self, value: int, low: int, high: int) -> int:
        """``value`` times a random percentage in [low, high], as an integer count."""
        return value * self.rng.randint(low, high) // 100

    def llm(self, name: str, *, prompt: int, output: int) -> CostEvent:
        """One chat call to model ``name`` (a key of :data:`MODELS`) with about these sizes."""
        if not self.admission:
            return self._call(name, prompt, output)
        ctx = current()
        chosen, _ = budgets.model_for(ctx, name)  # cheaper once a soft limit is crossed
        provider, _ = MODELS[chosen]
        estimate = self.outlay.catalog.estimate(
            provider=provider, model=chosen, input_tokens=prompt, max_output_tokens=output
        )
        try:
            reservation = budgets.reserve(ctx, estimate or ZERO, model=chosen)
        finally:
            self.platform.record_decisions(self.clock)  # soft limit reached, or the call refused
        try:
            event = self._call(chosen, prompt, output)
        except BaseException:
            budgets.release(reservation)
            raise
        budgets.settle(reservation, event.cost)  # None (unpriced): the estimate is charged
        self.platform.record_decisions(self.clock)
        return event

    def _call(self, name: str, prompt: int, output: int) -> CostEvent:
        provider, model = MODELS[name]
        at = self.clock.tick()
        body: dict[str, object]
        if provider == "anthropic":
            # Agents resend a long system prompt + history: most of it is read from the prompt cache,
            # and now and then a new prefix is written to it.
            prefix = self._pct(prompt, 50, 90)
            write = prefix if self.rng.randint(1, 4) == 1 else 0
            body = anthropic_message(
                model=model, input_tokens=prompt - prefix, output_tokens=output,
                cache_read=prefix - write, cache_write=write,
            )  # fmt: skip
        elif provider == "google":
            thoughts = self._pct(output, 30, 150)  # 2.5 models think by default, billed as output
            cached = self._pct(prompt, 20, 60) if prompt > 4096 and self.rng.randint(1, 3) == 1 else 0
            body = gemini_response(
                model=model, prompt_tokens=prompt, candidates_tokens=output,
                thoughts_tokens=thoughts, cached_tokens=cached,
            )  # fmt: skip
        else:
            # OpenAI caches prompts of 1024+ tokens in 128-token increments.
            cached = 0
            if prompt >= 2048 and self.rng.randint(1, 2) == 1:
                cached = self._pct(prompt, 30, 80) // 128 * 128
            reasoning = self._pct(output, 50, 85) if name == "o3" else 0
            body = openai_chat(
                model=model, prompt_tokens=prompt, completion_tokens=output,
                cached_tokens=cached, reasoning_tokens=reasoning, created=at,
            )  # fmt: skip
        event = self.outlay.record_llm(provider=provider, response=body, at=at)
        return self.platform.account(event)

    def embed(self, texts: int, tokens: int) -> CostEvent:
        body = openai_embeddings(model=EMBEDDING_MODEL, inputs=texts, tokens=tokens)
        event = self.outlay.record_llm(
            provider="openai", response=body, api="embeddings", at=self.clock.tick()
        )
        return self.platform.account(event)

    def retrieve(self, queries: int) -> CostEvent:
        """Vector-store queries against the knowledge base (a custom unit, ``queries``)."""
        event = self.outlay.record_tool(
            "kb-index", queries, unit="queries", provider="vectorstore", operation="retrieval",
            at=self.clock.tick(),
        )  # fmt: skip
        return self.platform.account(event)

    def tool(self, name: str, calls: int = 1) -> CostEvent:
        return self.platform.account(self.outlay.record_tool(name, calls, at=self.clock.tick()))

    def self_hosted(self, *, prompt: int, output: int) -> CostEvent:
        """A call to the self-hosted model, priced by the GPU-seconds it took (in hundredths)."""
        wall_centis = prompt // 40 + output * 3 + self.rng.randint(20, 120)  # prefill + decode + queue
        gpu_seconds = Decimal(wall_centis * _GPUS).scaleb(-2)
        provider, model = SELF_HOSTED
        event = self.outlay.record_usage(
            operation="chat", provider=provider, model=model, at=self.clock.tick(),
            usage={"input_tokens": prompt, "output_tokens": output, "units": {"gpu_seconds": gpu_seconds}},
        )  # fmt: skip
        return self.platform.account(event)

    def batch_gpu(self, gpu_seconds: int) -> CostEvent:
        """Offline work on the self-hosted node (re-summarising a corpus): GPU time only."""
        provider, model = SELF_HOSTED
        event = self.outlay.record_usage(
            operation="compute", provider=provider, model=model, at=self.clock.tick(),
            usage={"units": {"gpu_seconds": gpu_seconds}},
        )  # fmt: skip
        return self.platform.account(event)
