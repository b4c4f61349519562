"""Budgets through the gateway: 402 at the hard limit, 429 when throttled, downgrades, no overshoot."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import anthropic
import openai
import pytest

from outlay._errors import Throttled
from outlay.gateway import Admission, Call, Gateway, InMemoryHooks, Principal
from outlay.testing import FakeProvider

from .conftest import CLIENT_KEY, OTHER_KEY, make_hooks, wait_for

MESSAGES = [{"role": "user", "content": "plan the quarter"}]


def test_hard_limit_is_402_in_each_provider_format(gateway: Gateway, gw_url: str, fake: FakeProvider) -> None:
    gateway.hooks = hooks = make_hooks(limits={"acme": Decimal("0.02")}, estimate=Decimal("0.015"))
    oai = openai.OpenAI(base_url=gw_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    hooks.spent["acme"] = Decimal("0.019")
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    details = caught.value.response.json()["error"]["outlay"]
    assert details["scope"] == "tenant"
    assert details["limit"] == "0.02"
    assert details["spent"] == "0.019"
    claude = anthropic.Anthropic(base_url=gw_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.status_code == 402
    assert refused.value.response.json()["error"]["type"] == "billing_error"
    # Another tenant is unaffected (tenants are isolated).
    other = openai.OpenAI(base_url=gw_url + "/v1", api_key=OTHER_KEY, max_retries=0)
    assert other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    assert len(fake.requests) == 2
    for client in (oai, claude, other):
        client.close()


class _Throttling(InMemoryHooks):
    async def admit(self, principal: Principal, call: Call) -> Admission:
        raise Throttled("acme is spending too fast", retry_after=2.5, tenant=principal.tenant_id)


def test_throttled_is_429_with_retry_after(gateway: Gateway, gw_url: str, fake: FakeProvider) -> None:
    gateway.hooks = _Throttling(make_hooks().keys)
    claude = anthropic.Anthropic(base_url=gw_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "3"
    assert fake.requests == []
    claude.close()


def test_soft_limit_downgrades_the_model_and_says_so(
    gateway: Gateway, gw_url: str, fake: FakeProvider
) -> None:
    gateway.hooks = hooks = make_hooks(limits={"acme": Decimal("1")}, downgrades={"gpt-4o": "gpt-4o-mini"})
    hooks.spent["acme"] = Decimal("0.9")
    oai = openai.OpenAI(base_url=gw_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-outlay-downgraded-from"] == "gpt-4o"
    assert raw.headers["x-outlay-model"] == "gpt-4o-mini"
    assert fake.requests[-1].json()["model"] == "gpt-4o-mini"
    assert Decimal(raw.headers["x-outlay-budget-remaining"]) < Decimal("0.1")
    oai.close()


async def test_concurrent_streams_never_overshoot_a_hard_limit(
    gateway: Gateway, gw_url: str, fake: FakeProvider
) -> None:
    # 64 concurrent streams; each reserves 0.01 against a 0.10 limit and costs exactly that, so
    # whatever the interleaving, at most 10 may ever be admitted.
    gateway.hooks = hooks = make_hooks(
        limits={"acme": Decimal("0.10")}, estimate=Decimal("0.01"), price=lambda model, usage: Decimal("0.01")
    )
    client = openai.AsyncOpenAI(base_url=gw_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)

    async def one() -> int:
        try:
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            async for _ in stream:
                pass
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    statuses = await asyncio.gather(*(one() for _ in range(64)))
    await client.close()
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 402}
    assert admitted == 10  # the limit is used up exactly, never overshot
    await asyncio.to_thread(wait_for, lambda: len(hooks.outcomes) == admitted)
    assert hooks.spent["acme"] == Decimal("0.10")
    assert hooks.reserved["acme"] == 0  # every reservation settled
    assert len(fake.requests) == admitted


def test_a_client_hanging_up_on_a_silent_upstream_is_noticed_at_once(
    gateway: Gateway, gw_url: str, fake: FakeProvider
) -> None:
    gateway.hooks = hooks = make_hooks()
    fake.chunk_delay = 4.0  # the upstream "thinks" between events (longer than its 1.5 s read timeout here)
    try:
        claude = anthropic.Anthropic(base_url=gw_url, api_key=CLIENT_KEY, max_retries=0)
        with claude.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            next(iter(stream))
            hung_up = time.monotonic()  # leaving the block closes the connection
        claude.close()
        wait_for(lambda: len(hooks.outcomes) == 1, timeout=3.0)  # not once the upstream read times out
        noticed = time.monotonic() - hung_up
    finally:
        fake.chunk_delay = 0.0
    assert noticed < 1.0
    _, outcome, _ = hooks.outcomes[0]
    assert outcome.client_disconnected


def test_client_disconnect_mid_stream_is_still_settled(
    gateway: Gateway, gw_url: str, fake: FakeProvider
) -> None:
    gateway.hooks = hooks = make_hooks()
    fake.chunk_delay = 0.2
    try:
        claude = anthropic.Anthropic(base_url=gw_url, api_key=CLIENT_KEY, max_retries=0)
        with claude.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            next(iter(stream))  # message_start arrived; then the client walks away
        claude.close()
        wait_for(lambda: len(hooks.outcomes) == 1)
    finally:
        fake.chunk_delay = 0.0
    _, outcome, settlement = hooks.outcomes[0]
    assert outcome.client_disconnected
    assert outcome.usage is not None
    assert not outcome.usage.complete
    assert settlement.cost is not None
