"""The service tier a provider says served a call is read with its usage, whole or streamed; a value
that is not a tier name never stops the usage of a billed call from being read."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from outlay.providers import parse_response, usage_from_response, usage_from_stream

from . import fixtures as fx

BAD_TIERS: list[Any] = [
    12,
    True,
    {"tier": "priority"},
    ["priority"],
    "x" * 100_000,
    "pri ority",
    "",
    "priorité",
]


def chat(tier: object) -> dict[str, Any]:
    return {**copy.deepcopy(fx.CHAT_COMPLETION), "service_tier": tier}


def response(tier: object) -> dict[str, Any]:
    return {**copy.deepcopy(fx.RESPONSE), "service_tier": tier}


def anthropic(tier: object) -> dict[str, Any]:
    body = copy.deepcopy(fx.ANTHROPIC_MESSAGE)
    body["usage"]["service_tier"] = tier
    return body


def gemini(traffic: object) -> dict[str, Any]:
    body = copy.deepcopy(fx.GEMINI_RESPONSE)
    body["usageMetadata"]["trafficType"] = traffic
    return body


@pytest.mark.parametrize(
    ("provider", "body", "tier"),
    [
        ("openai", chat("priority"), "priority"),
        ("openai", chat("flex"), "flex"),
        ("openai", chat("scale"), "scale"),
        ("openai", chat("default"), None),
        ("openai", chat("auto"), None),
        ("openai", response("priority"), "priority"),
        ("openai", response("flex"), "flex"),
        ("anthropic", anthropic("priority"), "priority"),
        ("anthropic", anthropic("batch"), "batch"),
        ("anthropic", anthropic("standard"), None),
        ("google", gemini("ON_DEMAND_PRIORITY"), "priority"),
        ("google", gemini("ON_DEMAND_FLEX"), "flex"),
        ("google", gemini("ON_DEMAND"), None),
        ("google", gemini("PROVISIONED_THROUGHPUT"), None),
    ],
)
def test_the_served_tier_is_read_from_a_whole_response(
    provider: str, body: dict[str, Any], tier: str | None
) -> None:
    usage = usage_from_response(provider, body)
    assert usage.service_tier == tier
    # Everything else is what the same response says at the standard tier.
    assert usage.to_dict() | {"service_tier": None} == usage_from_response(
        provider, _standard(provider, body)
    ).to_dict() | {"service_tier": None}


def _standard(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    if provider == "openai":
        return {**body, "service_tier": "default"}
    if provider == "anthropic":
        return anthropic("standard")
    return gemini("ON_DEMAND")


def test_gemini_sdk_snake_case_traffic_type_is_read() -> None:
    body = copy.deepcopy(fx.GEMINI_RESPONSE)
    body["usage_metadata"] = body.pop("usageMetadata")
    body["usage_metadata"]["traffic_type"] = "ON_DEMAND_PRIORITY"
    assert usage_from_response("google", body).service_tier == "priority"


def test_sdk_objects_carry_the_tier() -> None:
    assert (
        usage_from_response("openai", ChatCompletion.model_validate(chat("priority"))).service_tier
        == "priority"
    )
    assert usage_from_response("openai", Response.model_validate(response("flex"))).service_tier == "flex"
    assert (
        usage_from_response("anthropic", Message.model_validate(anthropic("batch"))).service_tier == "batch"
    )


@pytest.mark.parametrize("bad", BAD_TIERS)
def test_a_bad_tier_value_is_ignored_and_the_usage_still_read(bad: object) -> None:
    for provider, body in (
        ("openai", chat(bad)),
        ("openai", response(bad)),
        ("anthropic", anthropic(bad)),
        ("google", gemini(bad)),
    ):
        parsed = parse_response(provider, body)
        assert parsed.usage.service_tier is None
        assert parsed.usage.input_tokens > 0 and parsed.usage.complete


# -- streams -----------------------------------------------------------------------------------------


def chat_stream(tier: object, *, on_usage_chunk: bool = True) -> bytes:
    events = copy.deepcopy(fx.CHAT_STREAM_EVENTS)
    for event in events:
        if on_usage_chunk or event["usage"] is None:
            event["service_tier"] = tier
    return fx.sse(events, done=True)


def responses_stream(created: object, completed: object) -> bytes:
    events = fx.responses_stream_events()
    events[0]["response"] = {**events[0]["response"], "service_tier": created}
    events[1]["response"] = {**events[1]["response"], "service_tier": created}
    events[-1]["response"] = {**events[-1]["response"], "service_tier": completed}
    return fx.sse(events, named=True)


def anthropic_stream(tier: object, *, in_delta: object = None) -> bytes:
    events = copy.deepcopy(fx.anthropic_stream_events())
    events[0]["message"]["usage"]["service_tier"] = tier
    if in_delta is not None:
        events[-2]["usage"]["service_tier"] = in_delta
    return fx.sse(events, named=True)


def gemini_stream(traffic: object) -> bytes:
    events = fx.gemini_stream_events()
    for event in events:
        event["usageMetadata"]["trafficType"] = traffic
    return fx.sse(events, crlf=True)


@pytest.mark.parametrize(
    ("provider", "api", "sse", "tier"),
    [
        ("openai", "chat", chat_stream("priority"), "priority"),
        # The usage chunk of a server that does not repeat it: an earlier chunk's tier stands.
        ("openai", "chat", chat_stream("flex", on_usage_chunk=False), "flex"),
        ("openai", "chat", chat_stream("default"), None),
        # response.created says what was asked; the terminal event what served it.
        ("openai", "responses", responses_stream("auto", "priority"), "priority"),
        ("openai", "responses", responses_stream("priority", "default"), None),
        ("anthropic", None, anthropic_stream("priority"), "priority"),
        ("anthropic", None, anthropic_stream("batch"), "batch"),
        ("anthropic", None, anthropic_stream("standard", in_delta="priority"), "priority"),
        ("google", None, gemini_stream("ON_DEMAND_PRIORITY"), "priority"),
        ("google", None, gemini_stream("ON_DEMAND"), None),
    ],
)
def test_the_served_tier_is_read_from_a_stream(
    provider: str, api: str | None, sse: bytes, tier: str | None
) -> None:
    usage = usage_from_stream(provider, sse, api)
    assert usage.complete
    assert usage.service_tier == tier


def test_a_cut_stream_keeps_its_tier_on_the_lower_bound() -> None:
    sse = chat_stream("priority")
    cut = sse[: sse.index(b'"usage": {')]
    usage = usage_from_stream("openai", cut, "chat")
    assert not usage.complete and usage.service_tier == "priority"


@pytest.mark.parametrize("bad", BAD_TIERS)
def test_a_bad_tier_in_a_stream_is_ignored(bad: object) -> None:
    for provider, api, sse in (
        ("openai", "chat", chat_stream(bad)),
        ("openai", "responses", responses_stream(bad, bad)),
        ("anthropic", None, anthropic_stream(bad)),
        ("google", None, gemini_stream(bad)),
    ):
        usage = usage_from_stream(provider, sse, api)
        assert usage.complete and usage.service_tier is None
