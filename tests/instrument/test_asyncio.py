"""The async SDK clients in an asyncio application: concurrent tasks each in their own context,
cancellation mid-request and mid-stream, the SDKs' stream helpers and raw/streaming responses."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

import outlay
from outlay.budgets import Budget, BudgetEngine
from outlay.instrument import async_anthropic_client, async_openai_client
from outlay.testing import FakeProvider, Fault

from .conftest import events

HELLO: Any = [{"role": "user", "content": "Say hello to the metering transport, please."}]


async def test_concurrent_tasks_are_each_attributed_to_their_own_tenant_and_run(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    client = async_openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k")

    async def task(i: int) -> tuple[str, str]:
        with outlay.attribute(tenant=f"t{i}"), outlay.run(f"r{i}") as run:
            await asyncio.sleep(0.001 * (i % 3))
            if i % 2:
                await client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
            else:
                stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
                async for _ in stream:
                    await asyncio.sleep(0)
            return f"t{i}", run.id

    async with client, asyncio.TaskGroup() as group:
        tasks = [group.create_task(task(i)) for i in range(16)]
    recorded = events(pipeline)
    assert sorted((e.tenant_id or "", e.run_id or "") for e in recorded) == sorted(t.result() for t in tasks)


@pytest.mark.parametrize("where", ["request", "stream"])
async def test_a_cancelled_call_is_recorded_once_and_its_hold_charged(
    where: str, fake: FakeProvider, base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    budget = Budget(scope="tenant", period="month", limit="10")
    engine.add_policy(budget)
    client = async_openai_client(
        outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k", max_retries=0
    )
    started = asyncio.Event()

    async def call() -> None:
        with outlay.attribute(tenant="acme"):
            if where == "request":
                fake.fail(Fault.hang())
                started.set()
                await client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=100)
            stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
            async with stream:  # closed as the cancellation leaves the block
                async for _ in stream:
                    started.set()
                    await asyncio.sleep(10)

    async with client:
        task = asyncio.create_task(call())
        await started.wait()
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [event] = events(pipeline)
    assert not event.usage.complete and event.cost is None and event.tenant_id == "acme"
    status = engine.status({"tenant": "acme"}, budget)
    assert status.reserved == 0 and status.spent > 0  # the estimate: never zero


async def test_the_sdks_stream_helpers_are_metered_read_or_left(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    openai_sdk = async_openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k")
    claude = async_anthropic_client(outlay=pipeline, budgets=engine, base_url=base_url, api_key="k")
    async with openai_sdk, claude:
        with outlay.attribute(tenant="acme"):
            async with openai_sdk.chat.completions.stream(model="gpt-4o", messages=HELLO) as chat:
                await chat.get_final_completion()
            async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=HELLO) as msg:
                await msg.get_final_message()
            async with openai_sdk.chat.completions.stream(model="gpt-4o", messages=HELLO) as chat:
                async for _ in chat:
                    break
            async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=HELLO) as msg:
                async for _ in msg:
                    break
    recorded = [(e.model, e.usage.complete, e.cost is not None) for e in events(pipeline)]
    assert recorded == [
        ("gpt-4o", True, True),
        ("claude-haiku-4-5", True, True),
        ("gpt-4o", False, False),
        ("claude-haiku-4-5", False, False),
    ]


async def test_raw_and_streaming_responses_are_metered(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    client = async_openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k")
    async with client:
        with outlay.attribute(tenant="acme"):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HELLO, max_tokens=5
            )
            raw.parse()
            streaming = client.chat.completions.with_streaming_response
            async with streaming.create(model="gpt-4o", messages=HELLO, max_tokens=5) as response:
                await response.parse()
            async with streaming.create(model="gpt-4o", messages=HELLO, stream=True) as response:
                async for _ in response.iter_lines():
                    pass
            async with streaming.create(model="gpt-4o", messages=HELLO, stream=True):
                pass  # never read: closed on leaving the block
    recorded = [(e.usage.complete, e.tenant_id) for e in events(pipeline)]
    assert recorded == [(True, "acme")] * 3 + [(False, "acme")]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_a_budget_refusal_in_an_async_call_is_raised_as_itself_and_nothing_is_sent(
    sdk: str, fake: FakeProvider, base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    engine.add_policy(Budget(scope="tenant", period="month", limit="0.000001"))
    with outlay.attribute(tenant="acme"), pytest.raises(outlay.BudgetExceeded) as info:
        if sdk == "openai":
            async with async_openai_client(
                outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k"
            ) as client:
                await client.chat.completions.create(model="gpt-4o", messages=HELLO)
        else:
            async with async_anthropic_client(
                outlay=pipeline, budgets=engine, base_url=base_url, api_key="k"
            ) as claude:
                await claude.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=HELLO)
    assert isinstance(info.value, anthropic.AnthropicError) == (sdk == "anthropic")
    assert fake.requests == [] and events(pipeline) == []
