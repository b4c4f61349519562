"""The official openai and anthropic SDKs, sync and async, streaming and not, metered by the transport."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai

import outlay
from outlay.budgets import BudgetEngine
from outlay.instrument import (
    MeteringTransport,
    async_anthropic_client,
    async_openai_client,
    openai_client,
)
from outlay.providers import declare_provider
from outlay.testing import FakeProvider

from .conftest import events, expected_cost

HELLO: Any = [{"role": "user", "content": "Say hello to the metering transport, please."}]


def test_openai_chat_is_recorded_with_exact_cost_tenant_and_run(
    openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    client = openai_sdk
    with outlay.attribute(tenant="acme", feature="support"), outlay.run("agent", kind="agent") as run:
        reply = client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=10)
        # durable before the SDK call returned: the event is already in the log
        assert pipeline.log.end_offset() == 1
    assert reply.usage is not None
    [event] = events(pipeline)
    assert (event.provider, event.model, event.operation, event.status) == ("openai", "gpt-4o", "chat", "ok")
    assert (event.tenant_id, event.feature, event.run_id, event.agent) == ("acme", "support", run.id, "agent")
    assert event.usage.input_tokens == reply.usage.prompt_tokens
    assert event.usage.output_tokens == reply.usage.completion_tokens == 10
    assert event.cost == expected_cost("gpt-4o", reply.usage.prompt_tokens, 10)
    assert event.latency_ms is not None and event.latency_ms > 0


def test_openai_stream_hides_the_usage_chunk_it_added_and_meters_it(
    fake: FakeProvider, base_url: str, openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    client = openai_sdk
    with outlay.attribute(tenant="acme"):
        stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True, max_tokens=50)
        chunks = list(stream)
    assert fake.requests[0].json()["stream_options"] == {"include_usage": True}
    assert chunks and all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the user
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text
    [event] = events(pipeline)
    assert event.usage.complete and event.usage.output_tokens == 16
    assert event.cost == expected_cost("gpt-4o", event.usage.input_tokens, 16)
    assert event.usage.input_tokens == fake_input_tokens(base_url, "gpt-4o")


def test_a_declared_openai_like_provider_gets_stream_usage_too(
    fake: FakeProvider, base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    provider = declare_provider("vllm-eu", like="openai")
    with (
        openai_client(
            outlay=pipeline, budgets=engine, provider=provider, base_url=base_url + "/v1", api_key="sk-test"
        ) as client,
        outlay.attribute(tenant="acme"),
    ):
        chunks = list(client.chat.completions.create(model="llama-3-70b", messages=HELLO, stream=True))
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the added usage chunk stays hidden
    [event] = events(pipeline)
    assert event.provider == "vllm-eu" and event.usage.complete and event.usage.output_tokens == 16


def fake_input_tokens(base_url: str, model: str) -> int:
    """What the fake bills as input for HELLO, asked without the transport."""
    with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-test") as plain:
        usage = plain.chat.completions.create(model=model, messages=HELLO).usage
    assert usage is not None
    return usage.prompt_tokens


def test_a_caller_who_asked_for_stream_usage_still_gets_it(
    openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    client = openai_sdk
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    [event] = events(pipeline)
    assert event.usage.output_tokens == chunks[-1].usage.completion_tokens
    assert event.attribution == "unattributed"  # no tenant: recorded all the same, with its origin


async def test_async_openai_chat_and_stream(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    client = async_openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k")
    async with client:
        with outlay.attribute(tenant="globex"), outlay.run("planner") as run:
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
            chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    first, second = events(pipeline)
    assert reply.usage is not None
    assert first.cost == expected_cost("gpt-4o-mini", reply.usage.prompt_tokens, 5)
    assert second.cost == expected_cost("gpt-4o-mini", reply.usage.prompt_tokens, 16)
    assert {first.tenant_id, second.tenant_id} == {"globex"}
    assert {first.run_id, second.run_id} == {run.id}


def test_anthropic_message_and_stream(anthropic_sdk: anthropic.Anthropic, pipeline: outlay.Outlay) -> None:
    client = anthropic_sdk
    with outlay.attribute(tenant="acme"):
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HELLO)
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=HELLO) as stream:
            final = stream.get_final_message()
    first, second = events(pipeline)
    for event, usage in ((first, message.usage), (second, final.usage)):
        assert (event.provider, event.model, event.tenant_id) == ("anthropic", "claude-haiku-4-5", "acme")
        assert event.usage.complete
        assert event.cost == expected_cost("claude-haiku-4-5", usage.input_tokens, usage.output_tokens)
    assert message.usage.output_tokens == 12


async def test_async_anthropic_message_and_stream(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    client = async_anthropic_client(outlay=pipeline, budgets=engine, base_url=base_url, api_key="k")
    async with client:
        with outlay.attribute(tenant="acme"), outlay.run("writer") as run:
            message = await client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HELLO)
            stream = await client.messages.create(
                model="claude-haiku-4-5", max_tokens=100, messages=HELLO, stream=True
            )
            kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    first, second = events(pipeline)
    assert first.run_id == second.run_id == run.id
    assert (
        first.cost
        == second.cost
        == expected_cost("claude-haiku-4-5", message.usage.input_tokens, message.usage.output_tokens)
    )


def test_gemini_openai_compatible_endpoint_is_billed_as_google(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    with openai_client(
        outlay=pipeline, budgets=engine, base_url=base_url + "/v1beta/openai", api_key="k"
    ) as client:
        reply = client.chat.completions.create(model="gemini-2.0-flash", messages=HELLO, max_tokens=8)
    [event] = events(pipeline)
    assert reply.usage is not None
    assert (event.provider, event.model) == ("google", "gemini-2.0-flash")
    assert event.cost == expected_cost("gemini-2.0-flash", reply.usage.prompt_tokens, 8)


def test_geminis_own_api_is_metered_as_the_google_genai_sdk_calls_it(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> None:
    # The model and streaming are named by the path; the SDK streams with alt=sse.
    transport = MeteringTransport(outlay=pipeline, budgets=engine)
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello, please."}]}],
            "generationConfig": {"maxOutputTokens": 50}}  # fmt: skip
    with (
        httpx2.Client(transport=transport, base_url=base_url + "/v1beta") as client,
        outlay.attribute(tenant="acme"),
    ):
        answer = client.post("/models/gemini-2.5-flash:generateContent", json=body).json()
        streamed = client.post(
            "/models/gemini-2.5-flash:streamGenerateContent", params={"alt": "sse"}, json=body
        )
        assert streamed.text.count("data: ") > 1
    whole, stream = events(pipeline)
    for event in (whole, stream):
        assert (event.provider, event.model, event.tenant_id) == ("google", "gemini-2.5-flash", "acme")
        assert event.usage.complete and event.usage.output_tokens == 16
        assert event.priced and event.cost is not None and event.cost > 0
    assert whole.usage.input_tokens == answer["usageMetadata"]["promptTokenCount"]
    assert stream.usage == whole.usage and stream.cost == whole.cost


def test_embeddings_are_metered_and_other_endpoints_pass_through(
    openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    client = openai_sdk
    result = client.embeddings.create(model="text-embedding-3-small", input="metered words")
    models = client.models.list()
    assert [m.id for m in models.data]
    [event] = events(pipeline)
    assert (event.operation, event.model) == ("embedding", "text-embedding-3-small")
    assert event.usage.input_tokens == result.usage.prompt_tokens
    assert event.usage.output_tokens == 0
