"""Whole responses: every provider's fields land in the right Usage field, cached/reasoning included."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from outlay._errors import InvalidUsage
from outlay._usage import CACHE_AUDIO_READ_UNIT, Usage
from outlay.pricing import PriceCatalog, rate
from outlay.providers import parse_response, usage_from_response

from . import fixtures as fx


def test_chat_completion_cached_and_reasoning_tokens_are_parts_of_input_and_output() -> None:
    parsed = parse_response("openai", fx.CHAT_COMPLETION)
    assert parsed.usage == Usage(
        input_tokens=2006, cache_read_tokens=1920, output_tokens=300, reasoning_tokens=64
    )
    assert parsed.usage.uncached_input_tokens == 86
    assert parsed.model == "gpt-4o-2024-08-06"  # the snapshot served, which is what gets priced
    assert parsed.response_id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"


def test_parsed_response_unpacks_like_a_tuple_and_is_frozen() -> None:
    usage, model, response_id = parse_response("openai", fx.CHAT_COMPLETION, api="chat")
    assert (usage.input_tokens, model, response_id) == (2006, "gpt-4o-2024-08-06", fx.CHAT_COMPLETION["id"])
    parsed = parse_response("openai", fx.CHAT_COMPLETION)
    with pytest.raises(AttributeError):
        parsed.model = "other"  # type: ignore[misc]


def test_chat_audio_tokens_map_to_input_and_output_audio() -> None:
    usage = usage_from_response("openai", fx.CHAT_AUDIO_COMPLETION)
    assert usage == Usage(input_tokens=120, input_audio_tokens=80, output_tokens=500, output_audio_tokens=430)


def test_chat_cache_writes_and_image_tokens_are_carved_out_of_input() -> None:
    body = copy.deepcopy(fx.CHAT_COMPLETION)
    body["usage"]["prompt_tokens_details"] = {
        "cached_tokens": 100,
        "cache_write_tokens": 400,
        "image_tokens": 85,
    }
    usage = usage_from_response("openai", body)
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.input_image_tokens) == (100, 400, 85)
    assert usage.uncached_input_tokens == 2006 - 500


def test_null_details_and_absent_optional_fields_read_as_zero() -> None:
    body = {
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
    }
    assert usage_from_response("openai", body) == Usage(input_tokens=9, output_tokens=3)


def test_body_as_json_text_and_bytes_gives_the_same_usage() -> None:
    text = json.dumps(fx.CHAT_COMPLETION)
    expected = usage_from_response("openai", fx.CHAT_COMPLETION)
    assert usage_from_response("openai", text) == expected
    assert usage_from_response("openai", text.encode()) == expected
    assert usage_from_response("openai", bytearray(text.encode())) == expected


def test_responses_api_counts_cached_reasoning_and_web_search_calls() -> None:
    parsed = parse_response("openai", fx.RESPONSE)
    assert parsed.usage == Usage(
        input_tokens=5200, cache_read_tokens=4096, output_tokens=900, reasoning_tokens=640, web_searches=2
    )
    assert parsed.model == "o4-mini-2025-04-16"
    assert parsed.response_id == fx.RESPONSE["id"]
    assert usage_from_response("openai", fx.RESPONSE, api="responses") == parsed.usage


def test_responses_api_counts_file_search_calls_as_the_storage_searches_unit() -> None:
    # OpenAI bills each file_search tool call ($2.50 per 1k) beside the tokens; genai-prices has
    # that price as storage_searches_kcount. Uncounted, the fee was silently zero.
    file_search = {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]}
    body = copy.deepcopy(fx.RESPONSE)
    body["output"] = [file_search, {**file_search, "id": "fs_2"}, *body["output"]]
    usage = usage_from_response("openai", body)
    assert usage.web_searches == 2
    assert dict(usage.units) == {"storage_searches": 2}
    rating = rate(usage, provider="openai", model="o4-mini")
    assert rating.priced
    assert rating.breakdown["unit:storage_searches"] == Decimal("0.005")


def test_embeddings_bill_input_only() -> None:
    parsed = parse_response("openai", fx.EMBEDDINGS)
    assert parsed.usage == Usage(input_tokens=8)
    assert parsed.model == "text-embedding-3-small"
    assert usage_from_response("openai", fx.EMBEDDINGS, api="embeddings") == Usage(input_tokens=8)


def test_legacy_completions_read_like_chat() -> None:
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "gpt-3.5-turbo-instruct",
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    assert usage_from_response("openai", body) == Usage(input_tokens=5, output_tokens=7)


def test_openai_compatible_body_without_object_is_detected_from_its_usage_shape() -> None:
    chat = {"model": "llama-3.1-8b", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    responses = {"model": "llama-3.1-8b", "usage": {"input_tokens": 10, "output_tokens": 2}}
    assert usage_from_response("openai", chat) == Usage(input_tokens=10, output_tokens=2)
    assert usage_from_response("openai", responses) == Usage(input_tokens=10, output_tokens=2)


def test_anthropic_input_adds_cache_reads_and_writes_with_the_1h_part() -> None:
    parsed = parse_response("anthropic", fx.ANTHROPIC_MESSAGE)
    assert parsed.usage == Usage(
        input_tokens=50 + 10000 + 3000,
        cache_read_tokens=10000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=2000,
        output_tokens=700,
        web_searches=3,
    )
    assert parsed.usage.uncached_input_tokens == 50
    assert parsed.usage.cache_write_5m_tokens == 1000
    assert parsed.model == "claude-sonnet-4-5-20250929"
    assert parsed.response_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert usage_from_response("anthropic", fx.ANTHROPIC_MESSAGE, api="messages") == parsed.usage


def test_anthropic_minimal_usage_and_thinking_tokens() -> None:
    body = {
        "type": "message",
        "model": "claude-opus-4-1",
        "usage": {
            "input_tokens": 12,
            "output_tokens": 400,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "output_tokens_details": {"thinking_tokens": 350},
        },
    }
    assert usage_from_response("anthropic", body) == Usage(
        input_tokens=12, output_tokens=400, reasoning_tokens=350
    )


def test_anthropic_ttl_breakdown_alone_gives_the_cache_writes() -> None:
    body = {
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 5},
        }
    }
    usage = usage_from_response("anthropic", body)
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (16, 15, 5)


def test_gemini_adds_tool_prompt_and_thoughts_and_counts_distinct_searches() -> None:
    parsed = parse_response("google", fx.GEMINI_RESPONSE)
    assert parsed.usage == Usage(
        input_tokens=1200 + 300,
        cache_read_tokens=1000,
        input_audio_tokens=300,
        output_tokens=150 + 450,
        reasoning_tokens=450,
        web_searches=2,  # "" is not billed, the repeated query counts once
    )
    assert parsed.model == "gemini-2.5-flash"
    assert parsed.response_id == "mAitaLmkHPPlz7IPvtfUqQ4"
    assert parse_response("gemini", fx.GEMINI_RESPONSE, api="generate_content") == parsed


def test_gemini_cached_audio_is_charged_once_at_the_cached_audio_price() -> None:
    # 10,000 cached audio tokens were first counted both as cache reads and as audio input (carved
    # out of the input twice), then charged as text cache reads: $0.03 instead of Google's $0.10 per
    # million on gemini-2.5-flash, a silent under-charge. They are cache reads at the audio price.
    body = {
        "usageMetadata": {
            "promptTokenCount": 30000,
            "cachedContentTokenCount": 12000,
            "candidatesTokenCount": 100,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": 10000},
                {"modality": "TEXT", "tokenCount": 20000},
            ],
            "cacheTokensDetails": [
                {"modality": "AUDIO", "tokenCount": 10000},
                {"modality": "TEXT", "tokenCount": 2000},
            ],
        },
        "modelVersion": "gemini-2.5-flash",
    }
    usage = usage_from_response("google", body)
    assert usage == Usage(
        input_tokens=30000,
        cache_read_tokens=12000,
        output_tokens=100,
        units={CACHE_AUDIO_READ_UNIT: 10000},
    )
    rating = PriceCatalog().rate(usage, provider="google", model="gemini-2.5-flash")
    assert rating.breakdown == {
        "cache_audio_read": Decimal("0.001"),  # 10,000 x $0.10/M
        "cache_read": Decimal("0.00006"),  # 2,000 text x $0.03/M
        "input": Decimal("0.0054"),  # 18,000 text x $0.30/M
        "output": Decimal("0.00025"),
    }
    assert rating.cost == Decimal("0.00671")
    # A model without a cached-audio price keeps them in its cache-read bucket (genai-prices' rule).
    plain = PriceCatalog().rate(usage, provider="google", model="gemini-2.5-pro")
    assert plain.priced and "cache_audio_read" not in plain.breakdown
    assert plain.breakdown["cache_read"] == Decimal("0.0015")  # 12,000 x $0.125/M
    bad = {**body["usageMetadata"], "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 10001}]}
    with pytest.raises(InvalidUsage, match="cacheTokensDetails"):
        usage_from_response("google", {"usageMetadata": bad})


def test_gemini_image_output_and_omitted_zero_fields() -> None:
    body = {
        "usageMetadata": {
            "promptTokenCount": 20,
            "candidatesTokenCount": 1300,
            "candidatesTokensDetails": [
                {"modality": "IMAGE", "tokenCount": 1290},
                {"modality": "TEXT", "tokenCount": 10},
            ],
        },
        "modelVersion": "gemini-2.5-flash-image",
    }
    assert usage_from_response("google", body) == Usage(
        input_tokens=20, output_tokens=1300, output_image_tokens=1290
    )
    assert usage_from_response("google", {"usageMetadata": {}}) == Usage()


def test_gemini_snake_case_sdk_dump_is_read_too() -> None:
    body = {
        "usage_metadata": {
            "prompt_token_count": 7,
            "cached_content_token_count": 2,
            "candidates_token_count": 3,
            "thoughts_token_count": 4,
        },
        "model_version": "gemini-2.0-flash",
        "response_id": "r1",
    }
    parsed = parse_response("google", body)
    assert parsed == (
        Usage(input_tokens=7, cache_read_tokens=2, output_tokens=7, reasoning_tokens=4),
        "gemini-2.0-flash",
        "r1",
    )


@pytest.mark.parametrize("cached", [128, None])  # None: the checked (slow) path
def test_chat_reasoning_reported_beside_completion_is_output_too(cached: int | None) -> None:
    # xAI's OpenAI-compatible API counts reasoning outside completion_tokens (total = prompt +
    # completion + reasoning) and bills it as output; OpenAI counts it inside.
    body = {
        "object": "chat.completion",
        "model": "grok-4",
        "usage": {
            "prompt_tokens": 10120,
            "completion_tokens": 1499,
            "total_tokens": 14428,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 2809},
        },
    }
    assert usage_from_response("openai", body) == Usage(
        input_tokens=10120, cache_read_tokens=cached or 0, output_tokens=4308, reasoning_tokens=2809
    )
    small = copy.deepcopy(body)
    small["usage"].update(completion_tokens=89, total_tokens=10120 + 89 + 6)
    small["usage"]["completion_tokens_details"]["reasoning_tokens"] = 6
    assert usage_from_response("openai", small).output_tokens == 95
    # OpenAI's own shape (reasoning inside completion) is unchanged
    inside = copy.deepcopy(small)
    inside["usage"]["total_tokens"] = 10120 + 89
    assert usage_from_response("openai", inside).output_tokens == 89
