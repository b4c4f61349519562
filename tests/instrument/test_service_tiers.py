"""A call served at a priority, flex or batch tier is recorded at that tier's price, end to end: the
official SDKs (or Gemini's own API over httpx) through the metering transport to the fake provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import outlay
from outlay.budgets import BudgetEngine
from outlay.events import CostEvent
from outlay.instrument import MeteringTransport
from outlay.testing import FakeProvider, ModelBehaviour

from .conftest import events

HELLO: Any = [{"role": "user", "content": "Say hello to the metering transport, please."}]
MTOK = Decimal(1_000_000)


def cost_at(per_in: str, per_out: str, event: CostEvent) -> Decimal:
    """USD per million input/output tokens, times what the event counted."""
    return (Decimal(per_in) * event.usage.input_tokens + Decimal(per_out) * event.usage.output_tokens) / MTOK


def assert_rated(event: CostEvent, per_in: str, per_out: str, version: str) -> None:
    assert event.priced and event.cost is not None
    assert event.cost == cost_at(per_in, per_out, event)
    assert event.cost.normalize().as_tuple() == cost_at(per_in, per_out, event).normalize().as_tuple()
    assert event.price_version == version


def test_openai_chat_at_priority_whole_and_streamed(
    openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    with outlay.attribute(tenant="acme"):
        reply = openai_sdk.chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=10, service_tier="priority"
        )
        chunks = list(
            openai_sdk.chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True, service_tier="priority"
            )
        )
        openai_sdk.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=10)
    assert reply.service_tier == "priority" and chunks[0].service_tier == "priority"
    whole, streamed, standard = events(pipeline)
    for event in (whole, streamed):
        assert event.usage.service_tier == "priority" and event.usage.complete
        # $4.25 / $17 per million, not the standard $2.50 / $10
        assert_rated(event, "4.25", "17", "genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority")
    assert standard.usage.service_tier is None
    assert_rated(standard, "2.5", "10", "genai-prices@0.2.3:openai/gpt-4o")
    assert whole.cost is not None and standard.cost is not None and whole.cost > standard.cost


def test_openai_responses_at_flex_whole_and_streamed(
    openai_sdk: openai.OpenAI, pipeline: outlay.Outlay
) -> None:
    openai_sdk.responses.create(model="gpt-5", input="Summarise the ledger.", service_tier="flex")
    stream = openai_sdk.responses.create(
        model="gpt-5", input="Summarise the ledger.", service_tier="flex", stream=True
    )
    kinds = [event.type for event in stream]
    assert kinds[-1] == "response.completed"
    for event in events(pipeline):
        assert event.usage.service_tier == "flex"
        assert_rated(event, "0.625", "5", "genai-prices@0.2.3:openai/gpt-5@2026-10-12#flex")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_batch_is_rated_at_the_batch_price(
    fake: FakeProvider,
    anthropic_sdk: anthropic.Anthropic,
    pipeline: outlay.Outlay,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    monkeypatch.setitem(
        fake.behaviours, "claude-haiku-4-5", ModelBehaviour(output_tokens=12, service_tier="batch")
    )
    if stream:
        with anthropic_sdk.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=HELLO) as s:
            s.get_final_message()
    else:
        anthropic_sdk.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HELLO)
    [event] = events(pipeline)
    assert event.usage.service_tier == "batch" and event.usage.output_tokens == 12
    assert_rated(event, "0.5", "2.5", "genai-prices@0.2.3:anthropic/claude-haiku-4-5@2026-10-14#batch")


def test_anthropic_priority_with_no_price_is_recorded_unpriced_never_at_standard(
    fake: FakeProvider,
    anthropic_sdk: anthropic.Anthropic,
    pipeline: outlay.Outlay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        fake.behaviours, "claude-haiku-4-5", ModelBehaviour(output_tokens=12, service_tier="priority")
    )
    with outlay.attribute(tenant="acme"):
        message = anthropic_sdk.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HELLO)
    assert message.usage.service_tier == "priority"
    [event] = events(pipeline)
    assert (event.priced, event.cost, event.usage.service_tier) == (False, None, "priority")
    assert event.unpriced_reason is not None
    assert event.unpriced_reason.startswith(
        "no 'priority' service tier price for anthropic/claude-haiku-4-5 at "
    )


def test_gemini_priority_from_vertex_traffic_type_whole_and_streamed(
    fake: FakeProvider,
    base_url: str,
    pipeline: outlay.Outlay,
    engine: BudgetEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = "gemini-3.8-flash-tts"
    monkeypatch.setitem(fake.behaviours, model, ModelBehaviour(service_tier="priority"))
    transport = MeteringTransport(outlay=pipeline, budgets=engine)
    body = {"contents": [{"role": "user", "parts": [{"text": "Read this aloud, please."}]}]}
    with httpx2.Client(transport=transport, base_url=base_url + "/v1beta") as client:
        answer = client.post(f"/models/{model}:generateContent", json=body).json()
        client.post(f"/models/{model}:streamGenerateContent", params={"alt": "sse"}, json=body)
    assert answer["usageMetadata"]["trafficType"] == "ON_DEMAND_PRIORITY"
    whole, streamed = events(pipeline)
    for event in (whole, streamed):
        assert event.usage.service_tier == "priority" and event.usage.complete
        # $0.90 / $16.20 per million until 2027 (standard: $0.50 / $9)
        assert_rated(event, "0.9", "16.2", f"genai-prices@0.2.3:google/{model}@2026-10-15#priority")


def test_a_garbage_tier_from_the_provider_never_stops_the_call_being_recorded(
    fake: FakeProvider, openai_sdk: openai.OpenAI, pipeline: outlay.Outlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fake.behaviours, "gpt-4o", ModelBehaviour(service_tier="p" * 50_000))
    with outlay.attribute(tenant="acme"):
        openai_sdk.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=10)
        list(openai_sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    for event in events(pipeline):
        assert event.usage.service_tier is None
        assert_rated(event, "2.5", "10", "genai-prices@0.2.3:openai/gpt-4o")


@pytest.mark.parametrize("as_", ["header", "serviceTier"])
def test_gemini_api_priority_from_its_header_or_usage_metadata_whole_and_streamed(
    fake: FakeProvider,
    base_url: str,
    pipeline: outlay.Outlay,
    engine: BudgetEngine,
    monkeypatch: pytest.MonkeyPatch,
    as_: Any,
) -> None:
    # The Gemini API (ai.google.dev) names the tier in the x-gemini-service-tier header, not the body.
    model = "gemini-3.8-flash-tts"
    behaviour = ModelBehaviour(service_tier="priority", gemini_tier_as=as_)
    monkeypatch.setitem(fake.behaviours, model, behaviour)
    transport = MeteringTransport(outlay=pipeline, budgets=engine)
    body = {"contents": [{"role": "user", "parts": [{"text": "Read this aloud, please."}]}]}
    with httpx2.Client(transport=transport, base_url=base_url + "/v1beta") as client:
        whole = client.post(f"/models/{model}:generateContent", json=body)
        with client.stream(
            "POST", f"/models/{model}:streamGenerateContent", params={"alt": "sse"}, json=body
        ) as stream:
            stream.read()
    assert "trafficType" not in whole.json()["usageMetadata"]
    if as_ == "header":
        assert whole.headers["x-gemini-service-tier"] == stream.headers["x-gemini-service-tier"] == "priority"
        assert "serviceTier" not in whole.json()["usageMetadata"]
    for event in events(pipeline):
        assert event.usage.service_tier == "priority" and event.usage.complete
        # $0.90 / $16.20 per million until 2027, not the standard $0.50 / $9
        assert_rated(event, "0.9", "16.2", f"genai-prices@0.2.3:google/{model}@2026-10-15#priority")


@pytest.mark.parametrize("tier", [None, "PRIORITY!", "priority, flex"], ids=["standard", "bang", "list"])
def test_gemini_api_header_standard_or_garbage_is_rated_at_standard(
    fake: FakeProvider,
    base_url: str,
    pipeline: outlay.Outlay,
    engine: BudgetEngine,
    monkeypatch: pytest.MonkeyPatch,
    tier: str | None,
) -> None:
    model = "gemini-3.8-flash-tts"
    monkeypatch.setitem(fake.behaviours, model, ModelBehaviour(service_tier=tier, gemini_tier_as="header"))
    transport = MeteringTransport(outlay=pipeline, budgets=engine)
    body = {"contents": [{"role": "user", "parts": [{"text": "Read this aloud, please."}]}]}
    with httpx2.Client(transport=transport, base_url=base_url + "/v1beta") as client:
        whole = client.post(f"/models/{model}:generateContent", json=body)
        client.post(f"/models/{model}:streamGenerateContent", params={"alt": "sse"}, json=body)
    assert whole.headers["x-gemini-service-tier"] == (tier or "standard")
    recorded = events(pipeline)
    assert len(recorded) == 2
    for event in recorded:
        assert event.usage.service_tier is None and event.usage.complete
        assert_rated(event, "0.5", "9", f"genai-prices@0.2.3:google/{model}")
