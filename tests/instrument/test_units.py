"""Request classification and the usage-chunk filter, without a server."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay.instrument._endpoints import classify, max_output_tokens
from outlay.instrument._filter import UsageChunkFilter

CONTENT = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAM = CONTENT * 3 + USAGE + DONE


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_the_usage_chunk_is_removed_however_the_stream_is_cut(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    hidden = UsageChunkFilter()
    out = b"".join(hidden.feed(chunk) for chunk in chunks) + hidden.flush()
    assert out == CONTENT * 3 + DONE
    assert hidden.hidden == 1


def test_an_unterminated_last_event_is_still_passed_on() -> None:
    hidden = UsageChunkFilter()
    assert hidden.feed(CONTENT + b"data: [DONE]") == CONTENT
    assert hidden.flush() == b"data: [DONE]"


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("api.openai.com", "/v1/chat/completions", ("openai", "openai", "chat", "chat")),
        ("api.openai.com", "/v1/responses", ("openai", "openai", "responses", "chat")),
        ("api.openai.com", "/v1/embeddings", ("openai", "openai", "embeddings", "embedding")),
        ("api.anthropic.com", "/v1/messages", ("anthropic", "anthropic", "messages", "chat")),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/openai/chat/completions",
            ("google", "openai", "chat", "chat"),
        ),
        ("vllm.internal", "/v1/chat/completions", ("openai", "openai", "chat", "chat")),
        (  # Gemini's own API (the google-genai SDK), and Vertex AI's path to it
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            ("google", "google", "generate_content", "chat"),
        ),
        (
            "europe-west4-aiplatform.googleapis.com",
            "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent",
            ("google", "google", "generate_content", "chat"),
        ),
        # Groq's and Azure's OpenAI paths hold "/openai/" too: OpenAI's format, not Gemini's bill
        ("api.groq.com", "/openai/v1/chat/completions", ("openai", "openai", "chat", "chat")),
        ("x.openai.azure.com", "/openai/v1/chat/completions", ("openai", "openai", "chat", "chat")),
    ],
)
def test_billable_endpoints_are_recognised(host: str, path: str, expected: tuple[str, ...]) -> None:
    endpoint = classify("POST", host, path, None)
    assert endpoint is not None
    assert (endpoint.provider, endpoint.wire, endpoint.api, endpoint.operation) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/files"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/responses/resp_123"),
        ("POST", "/v1/responses/resp_123/cancel"),
    ],
)
def test_other_endpoints_are_not_metered(method: str, path: str) -> None:
    assert classify(method, "api.openai.com", path, None) is None


def test_an_explicit_provider_wins_over_the_host() -> None:
    endpoint = classify("POST", "api.openai.com", "/v1/chat/completions", "google")
    assert endpoint is not None and (endpoint.provider, endpoint.wire) == ("google", "openai")


@pytest.mark.parametrize(
    ("api", "body", "expected"),
    [
        ("chat", {"max_completion_tokens": 7, "max_tokens": 9}, 7),
        ("chat", {"max_tokens": 9}, 9),
        ("chat", {}, 1024),
        ("chat", {"max_tokens": -5}, 1024),
        ("chat", {"max_tokens": True}, 1024),
        ("responses", {"max_output_tokens": 3}, 3),
        ("messages", {"max_tokens": 11}, 11),
        ("embeddings", {"max_tokens": 11}, 0),
    ],
)
def test_the_estimate_uses_the_requests_own_output_limit(
    api: str, body: dict[str, object], expected: int
) -> None:
    assert max_output_tokens(api, body, 1024) == expected
