"""Streamed responses: the same usage however the bytes are cut, cumulative counts never summed, and a
cut stream is a flagged lower bound, never a complete zero."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidUsage
from outlay._usage import Usage
from outlay.providers import CUT, StreamAccumulator, stream_accumulator, usage_from_stream

from . import fixtures as fx

CHAT_SSE = fx.sse(fx.CHAT_STREAM_EVENTS, done=True)
RESPONSES_SSE = fx.sse(fx.responses_stream_events(), named=True)
ANTHROPIC_SSE = fx.sse(fx.anthropic_stream_events(), named=True)
GEMINI_SSE = fx.sse(fx.gemini_stream_events(), crlf=True)

CHAT_USAGE = Usage(input_tokens=1500, cache_read_tokens=1024, output_tokens=42)
RESPONSES_USAGE = Usage(
    input_tokens=5200, cache_read_tokens=4096, output_tokens=900, reasoning_tokens=640, web_searches=2
)
ANTHROPIC_USAGE = Usage(
    input_tokens=13050,
    cache_read_tokens=10000,
    cache_write_tokens=3000,
    cache_write_1h_tokens=2000,
    output_tokens=700,
    web_searches=3,
)
GEMINI_USAGE = Usage(input_tokens=800, output_tokens=220, reasoning_tokens=200, web_searches=1)

STREAMS = [
    pytest.param("openai", "chat", CHAT_SSE, CHAT_USAGE, "gpt-4o-mini-2024-07-18", id="chat"),
    pytest.param("openai", "responses", RESPONSES_SSE, RESPONSES_USAGE, "o4-mini-2025-04-16", id="responses"),
    pytest.param(
        "anthropic", "messages", ANTHROPIC_SSE, ANTHROPIC_USAGE, "claude-sonnet-4-5-20250929", id="anthropic"
    ),
    pytest.param("google", None, GEMINI_SSE, GEMINI_USAGE, "gemini-2.5-pro", id="gemini"),
]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize(("provider", "api", "data", "expected", "model"), STREAMS)
def test_whole_stream_gives_the_final_usage_and_model(
    provider: str, api: str | None, data: bytes, expected: Usage, model: str
) -> None:
    acc = stream_accumulator(provider, api)
    acc.feed(data)
    assert acc.usage() == expected
    assert acc.model == model
    assert acc.done
    assert usage_from_stream(provider, data, api) == expected
    assert usage_from_stream(provider, data.decode(), api) == expected


@pytest.mark.parametrize(("provider", "api", "data", "expected", "model"), STREAMS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=40))
def test_any_chunk_boundaries_give_the_same_usage(
    provider: str, api: str | None, data: bytes, expected: Usage, model: str, cuts: list[int]
) -> None:
    acc = StreamAccumulator(provider, api)
    for piece in _split(data, cuts):
        acc.feed(piece)
    assert acc.usage() == expected
    assert acc.model == model


@pytest.mark.parametrize(("provider", "api", "data", "expected", "model"), STREAMS)
def test_byte_by_byte_feeding_gives_the_same_usage(
    provider: str, api: str | None, data: bytes, expected: Usage, model: str
) -> None:
    acc = StreamAccumulator(provider, api)
    for i in range(len(data)):
        acc.feed(data[i : i + 1])
    assert acc.usage() == expected


@pytest.mark.parametrize(("provider", "api", "data", "expected", "model"), STREAMS)
def test_every_cut_point_is_either_the_full_usage_or_flagged_incomplete(
    provider: str, api: str | None, data: bytes, expected: Usage, model: str
) -> None:
    for end in range(len(data)):
        usage = usage_from_stream(provider, data[:end], api)
        if usage.complete:
            assert usage == expected, end
        else:
            assert usage.reason is not None
            assert usage.reason.startswith(CUT), usage.reason
            # a lower bound: never more than the final counts
            assert usage.input_tokens <= expected.input_tokens
            assert usage.output_tokens <= expected.output_tokens


@pytest.mark.parametrize(("provider", "api", "data", "expected", "model"), STREAMS)
def test_iterables_of_text_lines_and_of_byte_chunks(
    provider: str, api: str | None, data: bytes, expected: Usage, model: str
) -> None:
    lines = data.decode().replace("\r\n", "\n").split("\n")  # like httpx iter_lines(): no line ends
    assert usage_from_stream(provider, iter(lines), api) == expected
    with_ends = data.decode().splitlines(keepends=True)  # like iterating a file
    assert usage_from_stream(provider, with_ends, api) == expected
    assert usage_from_stream(provider, (data[i : i + 7] for i in range(0, len(data), 7)), api) == expected


@pytest.mark.parametrize(
    ("provider", "events", "expected"),
    [
        ("openai", fx.CHAT_STREAM_EVENTS, CHAT_USAGE),
        ("openai", fx.responses_stream_events(), RESPONSES_USAGE),
        ("anthropic", fx.anthropic_stream_events(), ANTHROPIC_USAGE),
        ("google", fx.gemini_stream_events(), GEMINI_USAGE),
    ],
)
def test_event_dicts_give_the_same_usage(
    provider: str, events: list[dict[str, Any]], expected: Usage
) -> None:
    assert usage_from_stream(provider, events) == expected
    acc = stream_accumulator(provider)
    for event in events:
        acc.feed_event(event)
    assert acc.usage() == expected


def test_usage_mid_stream_is_a_flagged_lower_bound_then_complete() -> None:
    acc = stream_accumulator("anthropic")
    events = fx.anthropic_stream_events()
    acc.feed(fx.sse(events[:3], named=True))
    partial = acc.usage()
    assert not partial.complete
    assert partial.input_tokens == 13050  # message_start's input side is already known
    assert partial.output_tokens == 1
    assert not acc.done
    acc.feed(fx.sse(events[3:], named=True))
    assert acc.usage() == ANTHROPIC_USAGE


def test_anthropic_message_delta_counts_are_cumulative_latest_wins() -> None:
    events = fx.anthropic_stream_events()
    # Server tools can make Anthropic send several message_delta events; each is a running total.
    first = {
        "type": "message_delta",
        "delta": {"stop_reason": None},
        "usage": {"output_tokens": 300, "server_tool_use": {"web_search_requests": 1}},
    }
    usage = usage_from_stream("anthropic", [*events[:-2], first, *events[-2:]])
    assert usage.output_tokens == 700
    assert usage.web_searches == 3


def test_anthropic_newer_message_delta_repeating_input_and_cache_counts() -> None:
    delta = {
        "input_tokens": 60,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 10000,
        "output_tokens": 900,
        "output_tokens_details": {"thinking_tokens": 500},
    }
    usage = usage_from_stream("anthropic", fx.anthropic_stream_events(delta_usage=delta))
    assert usage.input_tokens == 60 + 3000 + 10000  # replaced, not added to message_start's 13050
    assert usage.cache_write_1h_tokens == 2000  # the TTL split only message_start reported
    assert (usage.output_tokens, usage.reasoning_tokens) == (900, 500)
    assert usage.complete


def test_chat_stream_without_include_usage_is_flagged_not_zero() -> None:
    events = fx.CHAT_STREAM_EVENTS[:-1]
    usage = usage_from_stream("openai", fx.sse(events, done=True))
    assert not usage.complete
    assert usage.reason is not None
    assert "include_usage" in usage.reason


def test_chat_continuous_usage_stats_latest_wins_and_is_final_at_done() -> None:
    running = [
        {**e, "usage": {"prompt_tokens": 10, "completion_tokens": i + 1}}
        for i, e in enumerate(fx.CHAT_STREAM_EVENTS[:4])
    ]
    cut = usage_from_stream("openai", fx.sse(running))
    assert (cut.output_tokens, cut.complete) == (4, False)
    done = usage_from_stream("openai", fx.sse(running, done=True))
    assert done == Usage(input_tokens=10, output_tokens=4)


@pytest.mark.parametrize("terminal", ["response.incomplete", "response.failed"])
def test_responses_incomplete_and_failed_events_carry_usage(terminal: str) -> None:
    usage = usage_from_stream("openai", fx.sse(fx.responses_stream_events(terminal), named=True))
    assert usage == RESPONSES_USAGE


def test_responses_cut_before_completed_keeps_seen_web_searches() -> None:
    usage = usage_from_stream("openai", fx.sse(fx.responses_stream_events()[:-1], named=True))
    assert not usage.complete
    assert usage.web_searches == 2
    assert usage.input_tokens == 0


def test_responses_stream_counts_file_search_calls_even_when_cut() -> None:
    events = fx.responses_stream_events()
    item = {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]}
    events.insert(
        2, {"type": "response.output_item.done", "sequence_number": 2, "output_index": 0, "item": item}
    )
    events[-1]["response"]["output"] = [item, *events[-1]["response"]["output"]]
    assert dict(usage_from_stream("openai", fx.sse(events, named=True)).units) == {"storage_searches": 1}
    cut = usage_from_stream("openai", fx.sse(events[:-1], named=True))
    assert not cut.complete
    assert dict(cut.units) == {"storage_searches": 1}


def test_responses_failed_without_usage_is_flagged() -> None:
    event = fx.responses_stream_events("response.failed")[-1]
    event["response"]["usage"] = None
    event["response"]["error"] = {"code": "server_error", "message": "The model failed"}
    usage = usage_from_stream("openai", [event])
    assert not usage.complete
    assert usage.reason is not None
    assert "server_error" in usage.reason


@pytest.mark.parametrize(
    ("provider", "data", "needle"),
    [
        (
            "anthropic",
            fx.sse(fx.anthropic_stream_events()[:4], named=True)
            + b"event: error\n"
            + b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
            "overloaded_error",
        ),
        (
            "openai",
            fx.sse(fx.CHAT_STREAM_EVENTS[:2])
            + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n',
            "server_error",
        ),
        (
            "openai",
            fx.sse(fx.responses_stream_events()[:2])
            + b'data: {"type": "error", "code": "rate_limit", "message": "slow down",'
            + b' "sequence_number": 9}\n\n',
            "rate_limit",
        ),
        (
            "google",
            fx.sse(fx.gemini_stream_events()[:1])
            + b'data: {"error": {"code": 503, "status": "UNAVAILABLE"}}\n\n',
            "UNAVAILABLE",
        ),
    ],
)
def test_provider_error_in_the_stream_is_flagged_with_the_partial_counts(
    provider: str, data: bytes, needle: str
) -> None:
    acc = stream_accumulator(provider)
    acc.feed(data)
    usage = acc.usage()
    assert not usage.complete
    assert acc.done
    assert usage.reason is not None
    assert needle in usage.reason


def test_empty_stream_is_incomplete_not_zero_complete() -> None:
    for provider in ("openai", "anthropic", "google"):
        usage = usage_from_stream(provider, b"")
        assert not usage.complete
        assert usage.reason is not None
        assert usage.reason.startswith(CUT)


def test_comments_multiline_data_and_unterminated_last_line() -> None:
    body = json.dumps(fx.CHAT_STREAM_EVENTS[-1], indent=1)
    multiline = "".join(f"data: {line}\n" for line in body.splitlines()) + "\n"
    data = ": keep-alive\n\n" + fx.sse(fx.CHAT_STREAM_EVENTS[:1]).decode() + multiline + "data: [DONE]"
    assert usage_from_stream("openai", data) == CHAT_USAGE
    acc = stream_accumulator("openai")
    acc.feed(fx.sse(fx.CHAT_STREAM_EVENTS[:1]).decode() + "data: " + json.dumps(fx.CHAT_STREAM_EVENTS[-1]))
    assert not acc.usage().complete  # the last line has not ended yet
    acc.close()
    assert acc.usage() == CHAT_USAGE


def test_accumulator_holds_only_the_unfinished_line() -> None:
    acc = stream_accumulator("openai")
    for _ in range(2000):
        acc.feed(fx.sse(fx.CHAT_STREAM_EVENTS[1:2]))
    acc.feed(b'data: {"partial')
    assert acc._decoder._partial == [b'data: {"partial']  # everything else was handed on
    assert acc._decoder._data == []


SPLITTERS: list[Callable[[bytes], list[bytes]]] = [
    lambda d: [d],
    lambda d: [d[i : i + 1] for i in range(len(d))],
    lambda d: d.splitlines(keepends=True),
]


@pytest.mark.parametrize("split", SPLITTERS)
def test_declared_provider_streams_in_its_format(split: Callable[[bytes], list[bytes]]) -> None:
    from outlay.providers import declare_provider

    name = declare_provider("selfhosted-vllm-stream", like="openai")
    acc = stream_accumulator(name, "chat")
    for piece in split(CHAT_SSE):
        acc.feed(piece)
    assert acc.usage() == CHAT_USAGE
    assert acc.provider == "selfhosted-vllm-stream"


def test_feeding_garbage_never_raises_but_usage_names_the_bad_event() -> None:
    acc = stream_accumulator("openai")
    acc.feed(fx.sse(fx.CHAT_STREAM_EVENTS[:1]))
    acc.feed(b'data: {"object": "chat.completion.chunk", "usage": {"prompt_tokens": 1,\n\n')
    acc.feed(CHAT_SSE)
    with pytest.raises(InvalidUsage, match=r"event 2: invalid JSON"):
        acc.usage()
