"""The fake provider, alone, against the official SDKs: they parse every answer and every error."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from outlay.testing import FakeProvider, Fault, LiveServer, ModelBehaviour, count_input_tokens

MESSAGES = [{"role": "user", "content": "a" * 400}]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeProvider, str]]:
    fake = FakeProvider(
        chunks=3,
        behaviours={"claude-*": ModelBehaviour(output_tokens=9, cached_tokens=50, cache_write_tokens=20)},
    )
    with LiveServer(fake) as server:
        yield fake, server.url
        fake.close()


@pytest.fixture
def fake(served: tuple[FakeProvider, str]) -> FakeProvider:
    served[0].reset()
    return served[0]


@pytest.fixture
def oai(served: tuple[FakeProvider, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=served[1] + "/v1", api_key="k", max_retries=0, timeout=5) as client:
        yield client


@pytest.fixture
def claude(served: tuple[FakeProvider, str]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served[1], api_key="k", max_retries=0, timeout=5) as client:
        yield client


def test_usage_is_derived_from_the_request(oai: openai.OpenAI, fake: FakeProvider) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_input_tokens({"messages": MESSAGES}) == 104
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"
    assert fake.requests[0].json()["max_tokens"] == 5
    assert fake.requests[0].headers["authorization"] == "Bearer k"


def test_chat_stream_with_and_without_include_usage(oai: openai.OpenAI) -> None:
    plain = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(c.choices for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"
    with_usage = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == 16
    assert len(with_usage) == len(plain) + 1 == 3 + 3


def test_responses_both_ways_and_the_stream_helper(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o", input="hi")
    events = list(oai.responses.create(model="gpt-4o", input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage == response.usage
    with oai.responses.stream(model="gpt-4o", input="hi") as stream:
        assert stream.get_final_response().output_text == response.output_text


def test_embeddings_float_and_base64_agree(oai: openai.OpenAI) -> None:
    default = oai.embeddings.create(model="text-embedding-3-small", input="hello world", dimensions=4)
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input="hello world", dimensions=4, encoding_format="float"
    )
    assert default.data[0].embedding == floats.data[0].embedding
    assert len(floats.data[0].embedding) == 4
    assert default.usage.prompt_tokens == 2


def test_anthropic_messages_and_stream_with_cache_usage(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.output_tokens) == (
        50,
        20,
        9,
    )
    assert usage.input_tokens + 50 + 20 == count_input_tokens({"messages": MESSAGES})
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert final.usage.output_tokens == 9
    assert final.content[0].text == message.content[0].text


def test_anthropic_requires_its_version_header(served: tuple[FakeProvider, str], fake: FakeProvider) -> None:
    response = httpx.post(served[1] + "/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 1})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_models_in_each_dialect(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    assert "gpt-4o" in [m.id for m in oai.models.list()]
    assert "claude-haiku-4-5" in [m.id for m in claude.models.list()]


def test_faults_in_each_provider_format(
    oai: openai.OpenAI, claude: anthropic.Anthropic, served: tuple[FakeProvider, str], fake: FakeProvider
) -> None:
    fake.fail(Fault.error(429, retry_after=4), path="/v1/chat/completions")
    fake.fail(Fault.error(529))
    with pytest.raises(anthropic.OverloadedError):  # the path-specific chat fault is not consumed here
        claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "4"
    assert limited.value.code == "rate_limit_exceeded"
    gemini = openai.OpenAI(base_url=served[1] + "/v1beta/openai", api_key="k", max_retries=0)
    fake.fail(Fault.error(500, message="boom"), times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as failed:
            gemini.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)  # type: ignore[arg-type]
    assert failed.value.response.json() == [{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}]
    assert gemini.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES).choices  # type: ignore[arg-type]
    gemini.close()


def test_drop_and_hang(oai: openai.OpenAI, fake: FakeProvider) -> None:
    fake.fail(Fault.drop(after_chunks=2))
    with pytest.raises(openai.APIConnectionError):
        list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    fake.fail(Fault.hang())
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert oai.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_required_api_key(served: tuple[FakeProvider, str]) -> None:
    strict = FakeProvider(api_key="right")
    with (
        LiveServer(strict) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


def test_live_server_releases_its_port_on_stop() -> None:
    server = LiveServer(FakeProvider()).start()
    port = server.port
    assert httpx.get(server.url + "/v1/models").status_code == 200
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
