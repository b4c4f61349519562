"""Responses and Anthropic calls using provider-side state and tools: budget holds count the
searches a request enables, not only its tokens; stored responses stay their tenant's.

A Responses web search costs $10 per thousand (gpt-4o-mini's tokens for a short call: ~$0.00003):
a hold of tokens only let ten concurrent searching calls spend five times a hard limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from outlay._errors import BudgetExceeded
from outlay._runtime import Outlay
from outlay.gateway import Admission, Call, Outcome, OutlayHooks, Principal, Upstream
from outlay.keys import InMemoryKeyStore
from outlay.testing import FakeProvider

from .conftest import Stack

OPENAI = Upstream("openai", "openai", "http://127.0.0.1:9/v1")
ANTHROPIC = Upstream("anthropic", "anthropic", "http://127.0.0.1:9")
#: What the tool definitions add to a hold through the body's size alone (tokens), at most.
SLACK = Decimal("0.0005")
SEARCH = Decimal("0.01")  # one web search (genai-prices: $10 per thousand)
FILE_SEARCH = Decimal("0.0025")  # one file search ($2.50 per thousand)


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


async def test_a_web_search_tool_is_held_at_the_search_price(hooks: OutlayHooks) -> None:
    plain = _call("responses", "gpt-4o-mini", input="news?", max_output_tokens=50)
    tokens = await _reserved(hooks, plain)
    searching = _call(
        "responses", "gpt-4o-mini", input="news?", max_output_tokens=50, tools=[{"type": "web_search"}]
    )
    assert SEARCH <= await _reserved(hooks, searching) - tokens < SEARCH + SLACK
    bounded = _call(
        "responses", "gpt-4o-mini", input="news?", max_output_tokens=50,
        tools=[{"type": "web_search_preview"}, {"type": "file_search", "vector_store_ids": ["vs"]}],
        max_tool_calls=3,
    )  # fmt: skip
    assert (
        3 * (SEARCH + FILE_SEARCH)
        <= await _reserved(hooks, bounded) - tokens
        < 3 * (SEARCH + FILE_SEARCH) + SLACK
    )


async def test_an_anthropic_web_search_is_held_max_uses_times(hooks: OutlayHooks) -> None:
    body: dict[str, Any] = {"max_tokens": 50, "messages": [{"role": "user", "content": "news?"}]}
    tokens = await _reserved(hooks, _call("messages", "claude-haiku-4-5", **body))
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 4}
    searching = _call("messages", "claude-haiku-4-5", **body, tools=[tool])
    assert 4 * SEARCH <= await _reserved(hooks, searching) - tokens < 4 * SEARCH + SLACK


async def test_concurrent_searching_calls_do_not_overshoot_a_hard_limit(hooks: OutlayHooks) -> None:
    principal = await _principal(hooks, budget="0.015/day")
    call = _call(
        "responses", "gpt-4o-mini", input="news?", max_output_tokens=50, tools=[{"type": "web_search"}]
    )
    results = await asyncio.gather(*(hooks.admit(principal, call) for _ in range(5)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Admission)]
    assert len(admitted) == 1  # each may cost a search ($0.01): only one fits in $0.015
    assert all(isinstance(r, BudgetExceeded) for r in results if not isinstance(r, Admission))
    for admission in admitted:
        await hooks.complete(admission, Outcome(500, None, None, 0.0))


def test_a_tenant_cannot_continue_another_tenants_stored_response(stack: Stack, fake: FakeProvider) -> None:
    """Every tenant reaches the provider with the gateway's one key: chaining another tenant's
    response id would let it read that conversation back. The gateway knows whose it is."""
    acme = stack.openai()
    first = acme.responses.create(model="gpt-4o-mini", input="our secret plan", max_output_tokens=20)
    _, other = stack.keys.create("globex")
    sent = len(fake.requests)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        stack.openai(other).responses.create(
            model="gpt-4o-mini", input="repeat the above", previous_response_id=first.id, max_output_tokens=20
        )
    assert refused.value.body["code"] == "foreign_response"  # type: ignore[index]
    assert len(fake.requests) == sent  # never forwarded
    # The tenant that made it still continues its own conversation.
    acme.responses.create(
        model="gpt-4o-mini", input="go on", previous_response_id=first.id, max_output_tokens=20
    )
    assert fake.requests[-1].json()["previous_response_id"] == first.id
