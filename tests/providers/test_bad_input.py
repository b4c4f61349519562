"""Bad input is refused with InvalidUsage naming the JSON path — never read as zero or guessed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from outlay._errors import InvalidInput, InvalidUsage
from outlay.providers import stream_accumulator, usage_from_response, usage_from_stream

from . import fixtures as fx


def _with(body: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    change(out)
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()

CASES = [
    # (provider, body, message regex)
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.prompt_tokens_details.cached_tokens", -3)),
        r"^usage\.prompt_tokens_details\.cached_tokens: must be a non-negative integer, got -3$",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.prompt_tokens", 2006.0)),
        r"^usage\.prompt_tokens: must be a non-negative integer, got 2006\.0$",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.completion_tokens", True)),
        r"^usage\.completion_tokens: must be a non-negative integer, got True$",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.completion_tokens", "300")),
        r"^usage\.completion_tokens: must be a non-negative integer, got '300'$",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.completion_tokens_details.reasoning_tokens", 1.5)),
        r"^usage\.completion_tokens_details\.reasoning_tokens: must be a non-negative integer",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.prompt_tokens", _DELETE)),
        r"^usage\.prompt_tokens: is missing",
    ),
    ("openai", _with(fx.CHAT_COMPLETION, _set("usage", _DELETE)), r"^usage: is missing"),
    ("openai", _with(fx.CHAT_COMPLETION, _set("usage", [1, 2])), r"^usage: must be an object, got list"),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.prompt_tokens_details", 5)),
        r"^usage\.prompt_tokens_details: must be an object, got int",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.prompt_tokens_details.cached_tokens", 5000)),
        r"^usage\.prompt_tokens_details\.cached_tokens: 5000 exceeds usage\.prompt_tokens=2006",
    ),
    (
        "openai",
        _with(fx.CHAT_COMPLETION, _set("usage.completion_tokens_details.reasoning_tokens", 301)),
        r"^usage\.completion_tokens_details\.reasoning_tokens: 301 exceeds usage\.completion_tokens=300",
    ),
    (
        "openai",
        _with(fx.RESPONSE, _set("usage.input_tokens_details.cached_tokens", -1)),
        r"^usage\.input_tokens_details\.cached_tokens: must be a non-negative integer, got -1$",
    ),
    ("openai", _with(fx.RESPONSE, _set("usage.output_tokens", None)), r"^usage\.output_tokens: is missing"),
    ("openai", _with(fx.RESPONSE, _set("output", {"type": "web_search_call"})), r"^output: must be a list"),
    (
        "openai",
        _with(fx.EMBEDDINGS, _set("usage.prompt_tokens", -8)),
        r"^usage\.prompt_tokens: must be a non-negative",
    ),
    (
        "openai",
        {"object": "thread.run", "id": "x"},
        r"^object: cannot tell which OpenAI API.*object='thread\.run'",
    ),
    (
        "anthropic",
        _with(fx.ANTHROPIC_MESSAGE, _set("usage.cache_read_input_tokens", -10)),
        r"^usage\.cache_read_input_tokens: must be a non-negative integer, got -10$",
    ),
    (
        "anthropic",
        _with(fx.ANTHROPIC_MESSAGE, _set("usage.cache_creation.ephemeral_1h_input_tokens", 9000)),
        r"^usage\.cache_creation\.ephemeral_\*_input_tokens: 10000 exceeds"
        r" usage\.cache_creation_input_tokens=3000",
    ),
    (
        "anthropic",
        _with(fx.ANTHROPIC_MESSAGE, _set("usage.server_tool_use.web_search_requests", "3")),
        r"^usage\.server_tool_use\.web_search_requests: must be a non-negative integer",
    ),
    (
        "anthropic",
        _with(fx.ANTHROPIC_MESSAGE, _set("usage.input_tokens", _DELETE)),
        r"^usage\.input_tokens: is missing",
    ),
    (
        "anthropic",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        r"^usage: is missing.*type='error'",
    ),
    (
        "google",
        _with(fx.GEMINI_RESPONSE, _set("usageMetadata.cachedContentTokenCount", 5000)),
        r"^usageMetadata\.cachedContentTokenCount: 5000 exceeds usageMetadata\.promptTokenCount=1200",
    ),
    (
        "google",
        _with(fx.GEMINI_RESPONSE, _set("usageMetadata.thoughtsTokenCount", -4)),
        r"^usageMetadata\.thoughtsTokenCount: must be a non-negative integer, got -4$",
    ),
    (
        "google",
        _with(fx.GEMINI_RESPONSE, _set("usageMetadata.promptTokensDetails", {"AUDIO": 3})),
        r"^usageMetadata\.promptTokensDetails: must be a list",
    ),
    (
        "google",
        _with(
            fx.GEMINI_RESPONSE, lambda b: b["usageMetadata"]["promptTokensDetails"][1].update(tokenCount=-2)
        ),
        r"^usageMetadata\.promptTokensDetails\[1\]\.tokenCount: must be a non-negative integer, got -2$",
    ),
    (
        "google",
        _with(
            fx.GEMINI_RESPONSE, lambda b: b["usageMetadata"]["promptTokensDetails"][1].update(tokenCount=5000)
        ),
        r"^usageMetadata\.promptTokensDetails\[modality=AUDIO\]\.tokenCount: 5000 exceeds",
    ),
    (
        "google",
        _with(fx.GEMINI_RESPONSE, lambda b: b["usageMetadata"]["promptTokensDetails"][0].pop("modality")),
        r"^usageMetadata\.promptTokensDetails\[0\]\.modality: must be a string",
    ),
    ("google", _with(fx.GEMINI_RESPONSE, _set("usageMetadata", _DELETE)), r"^usageMetadata: is missing"),
    (
        "google",
        _with(
            fx.GEMINI_RESPONSE, lambda b: b["candidates"][0]["groundingMetadata"].update(webSearchQueries="q")
        ),
        r"^candidates\[0\]\.groundingMetadata\.webSearchQueries: must be a list of strings",
    ),
]


@pytest.mark.parametrize(("provider", "body", "message"), CASES)
def test_bad_response_body_names_the_field(provider: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidUsage, match=message) as caught:
        usage_from_response(provider, body)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"usage": {"prompt_tokens": 1,', r"^body: invalid JSON"),
        ("", r"^body: invalid JSON"),
        ("[1, 2]", r"^body: expected a JSON object, got list"),
        (
            '{"object": "chat.completion", "usage": {"prompt_tokens": NaN, "completion_tokens": 1}}',
            r"^body: invalid JSON",
        ),
        (
            '{"object": "chat.completion", "usage": {"prompt_tokens": 1e3, "completion_tokens": 1}}',
            r"^usage\.prompt_tokens: must be a non-negative integer, got 1000\.0$",
        ),
        (12, r"^body: expected a dict, JSON text/bytes or an SDK response object, got int"),
        (None, r"^body: expected a dict"),
    ],
)
def test_bad_json_and_wrong_body_types(body: object, message: str) -> None:
    with pytest.raises(InvalidUsage, match=message):
        usage_from_response("openai", body)


def test_wrong_api_and_unknown_provider_are_invalid_input() -> None:
    with pytest.raises(
        InvalidInput, match=r"^api: 'chat' is not an API of the anthropic format; use one of: messages"
    ):
        usage_from_response("anthropic", fx.ANTHROPIC_MESSAGE, api="chat")
    with pytest.raises(
        InvalidInput, match=r"^provider: unknown provider 'mistral'; known: anthropic, google, openai"
    ):
        usage_from_response("mistral", fx.CHAT_COMPLETION)
    with pytest.raises(InvalidUsage, match=r"^api: embeddings do not stream"):
        stream_accumulator("openai", "embeddings")


def test_api_given_explicitly_is_trusted_over_detection() -> None:
    # Told it is an embeddings body, a chat body's completion tokens are not silently priced as input.
    with pytest.raises(InvalidUsage, match=r"usage\.prompt_tokens"):
        usage_from_response("openai", {"usage": {"input_tokens": 5, "output_tokens": 1}}, api="embeddings")


@pytest.mark.parametrize(
    ("provider", "data", "message"),
    [
        (
            "openai",
            fx.sse([{**fx.CHAT_STREAM_EVENTS[-1], "usage": {"prompt_tokens": -1, "completion_tokens": 2}}]),
            r"^event 1\.usage\.prompt_tokens: must be a non-negative integer, got -1$",
        ),
        (
            "anthropic",
            fx.sse(fx.anthropic_stream_events(delta_usage={"output_tokens": 2.5}), named=True),
            r"^event 7 \(message_delta\)\.usage\.output_tokens: must be a non-negative integer, got 2\.5$",
        ),
        (
            "anthropic",
            fx.sse([{"type": "message_start", "message": {"id": "m", "usage": {"output_tokens": 1}}}]),
            r"^event 1 \(message_start\)\.message\.usage\.input_tokens: is missing",
        ),
        (
            "openai",
            fx.sse(fx.responses_stream_events()[:2])
            + b'data: {"type": "response.completed", "response": 3}\n\n',
            r"^event 3 \(response\.completed\)\.response: must be an object",
        ),
        (
            "google",
            b'data: {"usageMetadata": {"promptTokenCount": -5}}\r\n\r\n',
            r"^event 1\.usageMetadata\.promptTokenCount: must be a non-negative integer, got -5$",
        ),
        (
            "openai",
            b'data: {"object": "chat.completion.chunk", "usage": {"prompt_tokens": 1}\n\n',
            r"^event 1: invalid JSON",
        ),
        (
            "anthropic",
            b'event: message_delta\ndata: ["message_delta"]\n\n',
            r"^event 1: expected a JSON object, got list",
        ),
    ],
)
def test_bad_stream_events_raise_from_usage_naming_the_event(
    provider: str, data: bytes, message: str
) -> None:
    acc = stream_accumulator(provider)
    acc.feed(data)  # feeding never raises: the stream keeps flowing to the client
    with pytest.raises(InvalidUsage, match=message):
        acc.usage()
    with pytest.raises(InvalidUsage, match=message):
        usage_from_stream(provider, data)


@pytest.mark.parametrize(
    ("sse", "message"),
    [
        ({"type": "message_start"}, r"^sse: expected SSE text/bytes or an iterable"),
        (42, r"^sse: expected SSE text/bytes or an iterable"),
        (
            [b"data: [DONE]\n\n", 3.5],
            r"^sse\[1\]: expected bytes, a text line, an event dict or an SDK event, got float",
        ),
    ],
)
def test_wrong_stream_input_types(sse: object, message: str) -> None:
    with pytest.raises(InvalidUsage, match=message):
        usage_from_stream("openai", sse)


def test_feed_refuses_non_bytes_and_feed_event_non_events() -> None:
    acc = stream_accumulator("openai")
    with pytest.raises(InvalidUsage, match=r"^chunk: expected bytes or str, got int"):
        acc.feed(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidUsage, match=r"^event 1: expected a dict or an SDK event object, got list"):
        acc.feed_event([1])


def test_a_runaway_line_is_refused_not_buffered_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    from outlay.providers import _sse

    monkeypatch.setattr(_sse, "MAX_LINE", 1000)
    acc = stream_accumulator("openai")
    for _ in range(20):
        acc.feed(b"x" * 100)
    assert sum(map(len, acc._decoder._partial)) <= 1000
    with pytest.raises(InvalidUsage, match=r"^stream: an SSE line is longer than 1000 bytes"):
        acc.usage()
