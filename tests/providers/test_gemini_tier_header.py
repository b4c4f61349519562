"""The Gemini API names the tier that served a call in the ``x-gemini-service-tier`` response header
(https://ai.google.dev/gemini-api/docs/priority-inference), and newer answers in
``usageMetadata.serviceTier``: both are read, whole and streamed; a tier the body names wins; a
header that names no tier is ignored and the usage of the billed call is still read."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from outlay import InvalidUsage
from outlay.providers import parse_response, stream_accumulator, usage_from_response, usage_from_stream

from . import fixtures as fx

HEADER = "x-gemini-service-tier"


def gemini(**usage_fields: object) -> dict[str, Any]:
    body = copy.deepcopy(fx.GEMINI_RESPONSE)
    body["usageMetadata"].update(usage_fields)
    return body


def gemini_sse(**usage_fields: object) -> bytes:
    events = fx.gemini_stream_events()
    for event in events:
        event["usageMetadata"].update(usage_fields)
    return fx.sse(events, crlf=True)


def chat_without_tier() -> dict[str, Any]:
    """Gemini's OpenAI-compatible endpoint answers in OpenAI's format, with no ``service_tier``."""
    body = copy.deepcopy(fx.CHAT_COMPLETION)
    body.pop("service_tier", None)
    return body


def chat_sse_without_tier() -> bytes:
    events = copy.deepcopy(fx.CHAT_STREAM_EVENTS)
    for event in events:
        event.pop("service_tier", None)
    return fx.sse(events, done=True)


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        ("priority", "priority"),
        ("flex", "flex"),
        ("Priority", "priority"),
        ("SERVICE_TIER_PRIORITY", "priority"),  # the proto spelling of Gemini's enum
        ("standard", None),
        ("unspecified", None),  # the default: standard
    ],
)
def test_the_header_names_the_tier_of_a_whole_answer(value: str, tier: str | None) -> None:
    standard = usage_from_response("google", gemini())
    usage = usage_from_response("google", gemini(), headers={HEADER: value})
    assert usage.service_tier == tier
    assert usage.to_dict() | {"service_tier": None} == standard.to_dict() | {"service_tier": None}


def test_the_header_is_found_in_any_case_and_in_httpx_headers() -> None:
    assert usage_from_response("google", gemini(), headers={"X-Gemini-Service-Tier": "priority"}).service_tier
    headers = httpx.Headers([("X-Gemini-Service-Tier", "flex")])
    assert usage_from_response("google", gemini(), headers=headers).service_tier == "flex"
    assert usage_from_response("google", gemini(), headers={}).service_tier is None


def test_the_header_names_the_tier_of_a_stream() -> None:
    usage = usage_from_stream("google", gemini_sse(), headers={HEADER: "priority"})
    assert usage.complete and usage.service_tier == "priority"
    acc = stream_accumulator("google", headers=httpx.Headers({HEADER: "flex"}))
    sse = gemini_sse()
    acc.feed(sse[:7])
    assert acc.usage().service_tier == "flex"  # a lower bound already carries its tier
    acc.feed(sse[7:])
    acc.close()
    assert acc.usage().complete and acc.usage().service_tier == "flex"


def test_gemini_openai_compatible_answers_take_the_header_too() -> None:
    whole = usage_from_response("openai", chat_without_tier(), "chat", headers={HEADER: "priority"})
    streamed = usage_from_stream("openai", chat_sse_without_tier(), "chat", headers={HEADER: "priority"})
    assert whole.service_tier == streamed.service_tier == "priority"
    assert streamed.complete


@pytest.mark.parametrize(
    ("fields", "tier"),
    [
        ({"serviceTier": "priority"}, "priority"),
        ({"serviceTier": "flex"}, "flex"),
        ({"serviceTier": "standard"}, None),
        ({"service_tier": "priority"}, "priority"),  # the google-genai SDK's snake_case
    ],
)
def test_usage_metadata_service_tier_is_read_whole_and_streamed(
    fields: dict[str, object], tier: str | None
) -> None:
    assert usage_from_response("google", gemini(**fields)).service_tier == tier
    streamed = usage_from_stream("google", gemini_sse(**fields))
    assert streamed.complete and streamed.service_tier == tier


@pytest.mark.parametrize(
    "fields",
    [
        {"trafficType": "ON_DEMAND"},  # Vertex: standard
        {"trafficType": "PROVISIONED_THROUGHPUT"},
        {"serviceTier": "standard"},
        {"serviceTier": "flex"},
    ],
)
def test_a_tier_the_body_names_wins_over_the_header(fields: dict[str, object]) -> None:
    body_says = usage_from_response("google", gemini(**fields)).service_tier
    assert (
        usage_from_response("google", gemini(**fields), headers={HEADER: "priority"}).service_tier
        == body_says
    )
    streamed = usage_from_stream("google", gemini_sse(**fields), headers={HEADER: "priority"})
    assert streamed.service_tier == body_says
    chat = {**chat_without_tier(), "service_tier": "default"}
    assert usage_from_response("openai", chat, "chat", headers={HEADER: "priority"}).service_tier is None


@pytest.mark.parametrize("bad", ["x" * 100_000, "pri ority", "", "priorité", "priority, flex", "🙂"])
def test_a_header_naming_no_tier_is_ignored_and_the_usage_still_read(bad: str) -> None:
    whole = parse_response("google", gemini(), headers={HEADER: bad}).usage
    streamed = usage_from_stream("google", gemini_sse(), headers={HEADER: bad})
    compatible = usage_from_response("openai", chat_without_tier(), "chat", headers={HEADER: bad})
    for usage in (whole, streamed, compatible):
        assert usage.service_tier is None and usage.complete and usage.input_tokens > 0


def test_a_google_genai_response_object_keeps_its_headers() -> None:
    # google-genai's GenerateContentResponse.sdk_http_response.headers, as model_dump(by_alias) gives it
    body = {**gemini(), "sdkHttpResponse": {"headers": {HEADER: "priority"}, "body": None}}
    assert usage_from_response("google", body).service_tier == "priority"
    assert usage_from_response("google", body, headers={HEADER: "flex"}).service_tier == "flex"


def test_anthropic_ignores_the_gemini_header() -> None:
    body = copy.deepcopy(fx.ANTHROPIC_MESSAGE)
    body["usage"].pop("service_tier", None)
    assert usage_from_response("anthropic", body, headers={HEADER: "priority"}).service_tier is None
    sse = fx.sse(fx.anthropic_stream_events(), named=True)
    assert usage_from_stream("anthropic", sse, headers={HEADER: "priority"}).service_tier is None


def test_headers_that_are_not_a_mapping_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidUsage) as caught:
        usage_from_response("google", gemini(), headers=[(HEADER, "priority")])  # type: ignore[arg-type]
    assert caught.value.field == "headers"
    with pytest.raises(InvalidUsage):
        stream_accumulator("google", headers="priority")  # type: ignore[arg-type]
