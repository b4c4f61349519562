"""A request asking for a service tier is held at that tier's price, so a hard limit holds.

gpt-4o priority costs 1.7x standard ($4.25/$17 per million instead of $2.50/$10): held at the
standard price, concurrent priority calls could spend 70% past a hard limit before any settled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from outlay._errors import BudgetExceeded
from outlay._runtime import Outlay
from outlay.gateway import Admission, Call, Outcome, OutlayHooks, Principal, Upstream
from outlay.keys import InMemoryKeyStore

OPENAI = Upstream("openai", "openai", "http://127.0.0.1:9/v1")
ANTHROPIC = Upstream("anthropic", "anthropic", "http://127.0.0.1:9")
MESSAGES = [{"role": "user", "content": "hi"}]
#: What the service_tier field adds to a hold through the body's size alone (a few input tokens).
SLACK = Decimal("0.0002")


@pytest.fixture
def hooks() -> Iterator[OutlayHooks]:
    home = Outlay("memory://")
    yield OutlayHooks(InMemoryKeyStore(), outlay=home, cache_ttl=0)
    home.close()


async def _principal(hooks: OutlayHooks, budget: str | None = None) -> Principal:
    _, secret = hooks.keys.create("acme", budget=budget)
    return await hooks.authenticate({"authorization": f"Bearer {secret}"})


def _call(api: Any, model: str, **body: Any) -> Call:
    body = {"model": model, **body}
    upstream = ANTHROPIC if api == "messages" else OPENAI
    return Call(api, model, model, upstream, False, body, {}, json.dumps(body).encode())


async def _reserved(hooks: OutlayHooks, call: Call) -> Decimal:
    admission = await hooks.admit(await _principal(hooks), call)
    await hooks.complete(admission, Outcome(500, None, None, 0.0))
    assert admission.reserved is not None
    return admission.reserved


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_an_openai_priority_request_is_held_at_the_priority_price(hooks: OutlayHooks, api: str) -> None:
    limit = {"max_tokens": 1_000} if api == "chat" else {"max_output_tokens": 1_000}
    body: dict[str, Any] = {"messages": MESSAGES} if api == "chat" else {"input": "hi"}
    standard = await _reserved(hooks, _call(api, "gpt-4o", **body, **limit))
    for asked in ("priority", " Priority "):
        priority = await _reserved(hooks, _call(api, "gpt-4o", **body, **limit, service_tier=asked))
        # Every price 1.7x (the field adds a few input tokens): 1.7x the standard hold.
        assert standard * Decimal("1.7") <= priority < standard * Decimal("1.7") + SLACK


async def test_a_request_asking_for_a_cheaper_or_unknown_tier_keeps_the_standard_hold(
    hooks: OutlayHooks,
) -> None:
    body: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 1_000}
    standard = await _reserved(hooks, _call("chat", "gpt-4o", **body))
    # flex may be served at standard; scale and Anthropic's priority have no price in the pinned
    # data; a value that is no tier name at all is the upstream's to refuse, never an admission error.
    for asked in ("flex", "default", "auto", "scale", "x" * 100, 3, None, "pri ority"):
        held = await _reserved(hooks, _call("chat", "gpt-4o", **body, service_tier=asked))
        assert standard <= held < standard + SLACK
    haiku = {"messages": MESSAGES, "max_tokens": 1_000}
    plain = await _reserved(hooks, _call("messages", "claude-haiku-4-5", **haiku))
    asked_priority = _call("messages", "claude-haiku-4-5", **haiku, service_tier="priority")
    assert plain <= await _reserved(hooks, asked_priority) < plain + SLACK


async def test_a_hard_limit_is_not_overshot_by_concurrent_priority_calls(hooks: OutlayHooks) -> None:
    body: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 1_000}
    standard = await _reserved(hooks, _call("chat", "gpt-4o", **body))
    priority = _call("chat", "gpt-4o", **body, service_tier="priority")
    # Room for three standard holds but only one priority hold (1.7x): two priority calls held
    # at standard would both be admitted and could spend 3.4 standard holds against a limit of 3.
    principal = await _principal(hooks, budget=f"{standard * 3}/day")
    results = await asyncio.gather(
        *(hooks.admit(principal, priority) for _ in range(2)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, Admission)]
    assert len(admitted) == 1
    assert all(isinstance(r, BudgetExceeded) for r in results if not isinstance(r, Admission))
    for admission in admitted:
        await hooks.complete(admission, Outcome(500, None, None, 0.0))
