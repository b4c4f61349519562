"""Official SDK objects as input: the fixtures validate against the SDKs' own types (so they are the
real wire shapes), and real SDK clients stream our fixtures through an httpx mock transport."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from outlay._usage import Usage
from outlay.providers import parse_response, stream_accumulator, usage_from_response, usage_from_stream

from . import fixtures as fx
from .test_streams import ANTHROPIC_USAGE, CHAT_USAGE, RESPONSES_USAGE


def test_openai_sdk_response_objects() -> None:
    chat = ChatCompletion.model_validate(fx.CHAT_COMPLETION)
    assert parse_response("openai", chat) == parse_response("openai", fx.CHAT_COMPLETION)
    response = Response.model_validate(fx.RESPONSE)
    assert usage_from_response("openai", response) == usage_from_response("openai", fx.RESPONSE)
    assert usage_from_response("openai", response).web_searches == 2
    embeddings = CreateEmbeddingResponse.model_validate(fx.EMBEDDINGS)
    assert usage_from_response("openai", embeddings) == Usage(input_tokens=8)


def test_openai_sdk_object_without_optional_details_dumps_nulls_that_read_as_zero() -> None:
    body = {**fx.CHAT_COMPLETION, "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    assert usage_from_response("openai", ChatCompletion.model_validate(body)) == Usage(
        input_tokens=3, output_tokens=4
    )


def test_anthropic_sdk_message() -> None:
    message = Message.model_validate(fx.ANTHROPIC_MESSAGE)
    parsed = parse_response("anthropic", message)
    assert parsed == parse_response("anthropic", fx.ANTHROPIC_MESSAGE)
    assert parsed.usage.cache_write_1h_tokens == 2000


def test_sdk_stream_event_objects() -> None:
    chunks = [ChatCompletionChunk.model_validate(e) for e in fx.CHAT_STREAM_EVENTS]
    assert usage_from_stream("openai", chunks) == CHAT_USAGE
    responses = TypeAdapter(ResponseStreamEvent)
    events = [responses.validate_python(e) for e in fx.responses_stream_events()]
    assert usage_from_stream("openai", events) == RESPONSES_USAGE
    messages = TypeAdapter(RawMessageStreamEvent)
    # The SDK drops "ping" keep-alives before they become events.
    raw = [messages.validate_python(e) for e in fx.anthropic_stream_events() if e["type"] != "ping"]
    acc = stream_accumulator("anthropic")
    for event in raw:
        acc.feed_event(event)
    assert acc.usage() == ANTHROPIC_USAGE
    assert acc.model == "claude-sonnet-4-5-20250929"


def _client(body: bytes, content_type: str) -> httpx2.Client:
    """An httpx2 client (the transport both SDKs run on) answering every request with ``body``."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": content_type})

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_real_openai_client_stream_and_raw_bytes_agree() -> None:
    data = fx.sse(fx.CHAT_STREAM_EVENTS, done=True)
    client = openai.OpenAI(api_key="sk-test", http_client=_client(data, "text/event-stream"))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        assert usage_from_stream("openai", stream) == CHAT_USAGE
    with client.with_streaming_response.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as raw:
        assert usage_from_stream("openai", raw.iter_bytes(), "chat") == CHAT_USAGE


def test_real_anthropic_client_stream_helper_events() -> None:
    data = fx.sse(fx.anthropic_stream_events(), named=True)

    # anthropic >= 2 runs on httpx2 and refuses httpx objects.
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=_client(data, "text/event-stream"))
    acc = stream_accumulator("anthropic", "messages")
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        for event in stream:  # includes the helper's own "text" events, which carry no usage
            acc.feed_event(event)
        final = stream.get_final_message()
    assert acc.usage() == ANTHROPIC_USAGE
    assert usage_from_response("anthropic", final) == ANTHROPIC_USAGE


def test_real_openai_client_non_streaming_response() -> None:
    import json

    client = openai.OpenAI(
        api_key="sk-test",
        http_client=_client(json.dumps(fx.RESPONSE).encode(), "application/json"),
    )
    response = client.responses.create(model="o4-mini", input="hi")
    assert usage_from_response("openai", response) == RESPONSES_USAGE


@pytest.mark.parametrize("bad", [object(), 42, ["not", "a", "body"]])
def test_objects_that_are_not_bodies_are_refused(bad: Any) -> None:
    from outlay._errors import InvalidUsage

    with pytest.raises(InvalidUsage, match="body"):
        usage_from_response("openai", bad)


def _lines(data: bytes) -> Iterator[str]:
    yield from data.decode().split("\n")


def test_sdk_iterators_mixed_with_nothing_else_need_no_api() -> None:
    chunks = (ChatCompletionChunk.model_validate(e) for e in fx.CHAT_STREAM_EVENTS)
    assert usage_from_stream("openai", chunks) == CHAT_USAGE
    assert usage_from_stream("openai", _lines(fx.sse(fx.CHAT_STREAM_EVENTS, done=True))) == CHAT_USAGE
