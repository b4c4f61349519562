"""Bad input gets a clear 4xx in the client's provider format — never a 5xx — and nothing is forwarded."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from outlay.gateway import Gateway, InMemoryHooks
from outlay.testing import FakeProvider

from .conftest import CLIENT_KEY

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _post(url: str, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        url + path, content=content, headers={**AUTH, "content-type": "application/json", **(headers or {})}
    )


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"[" * 20_000 + b"]" * 20_000, 400, "nested too deeply"),  # a RecursionError, not a 500
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 42, "messages": []}', 400, "model"),
        (b'{"model": "no-such-model-xyz", "messages": []}', 404, "no route"),
        (b'{"model": "claude-haiku-4-5", "messages": []}', 400, "/v1/messages"),
    ],
)
def test_bad_chat_bodies_get_openai_shaped_4xx(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks, body: bytes, status: int, needle: str
) -> None:
    response = _post(gw_url, "/v1/chat/completions", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["type"]
    assert fake.requests == []
    assert hooks.outcomes == []


@pytest.mark.parametrize("value", ['"true"', "1", '"yes"', "{}"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_stream_flag_that_is_not_a_boolean_is_refused_before_anything_is_sent(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks, value: str, path: str
) -> None:
    # The gateway streams, and asks a chat stream for its usage, only on "stream": true. An upstream
    # that coerces "true" or 1 (pydantic's default: vLLM and most self-hosted servers) would stream
    # without the usage chunk, and the call be recorded as an estimate far below what it produced.
    model = "claude-haiku-4-5" if path == "/v1/messages" else "gpt-4o-mini"
    body = f'{{"model": "{model}", "max_tokens": 8, "messages": [], "stream": {value}}}'.encode()
    response = _post(gw_url, path, body, {"x-api-key": CLIENT_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("stream: must be true or false, got ")
    assert fake.requests == []
    assert hooks.outcomes == []


def test_a_stream_flag_of_false_or_null_is_a_plain_call(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks
) -> None:
    for value in (b"false", b"null"):
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": ' + value
        response = _post(gw_url, "/v1/chat/completions", body + b"}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")


def test_bad_messages_body_gets_anthropic_shaped_400(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks
) -> None:
    response = _post(gw_url, "/v1/messages", b"{oops", {"x-api-key": CLIENT_KEY})
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


def test_an_endpoint_the_gateway_lacks_answers_an_anthropic_client_in_its_format(
    gw_url: str, claude: anthropic.Anthropic
) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.batches.list()  # (count_tokens, once the example here, is proxied now)
    assert caught.value.response.json()["error"]["type"] == "not_found_error"
    response = _post(gw_url, "/v1/messages/batches", b"{}", {"x-api-key": CLIENT_KEY})
    assert response.status_code == 404 and response.json()["type"] == "error"


def test_body_over_the_limit_is_413_without_reading_it_all(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks
) -> None:
    huge = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}'
    response = _post(gw_url, "/v1/chat/completions", huge)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: the limit still holds while streaming in
        for _ in range(100):
            yield b"x" * 4096

    chunked = httpx.post(gw_url + "/v1/messages", content=chunks(), headers={"x-api-key": CLIENT_KEY})
    assert chunked.status_code == 413
    assert chunked.json()["error"]["type"] == "request_too_large"
    assert fake.requests == []


def test_missing_unknown_and_revoked_keys_are_401(
    gw_url: str, fake: FakeProvider, hooks: InMemoryHooks
) -> None:
    for headers in ({}, {"authorization": "Bearer vk-nope"}, {"authorization": "Basic abc"}):
        client = openai.OpenAI(
            base_url=gw_url + "/v1",
            api_key="placeholder",
            max_retries=0,
            default_headers={"authorization": headers.get("authorization", "")},
        )
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        client.close()
    hooks.revoked.add(CLIENT_KEY)
    response = httpx.post(gw_url + "/v1/messages", json=CHAT, headers={"x-api-key": CLIENT_KEY})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "revoked" in response.json()["error"]["message"]
    assert fake.requests == []


def test_unknown_path_and_wrong_method(gw_url: str, hooks: InMemoryHooks) -> None:
    assert httpx.post(gw_url + "/v1/completions", json=CHAT, headers=AUTH).status_code == 404
    wrong = httpx.get(gw_url + "/v1/chat/completions", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"]


async def test_invalid_content_length_is_400(gateway: Gateway, hooks: InMemoryHooks) -> None:
    # Driven in-process: HTTP clients and servers refuse to carry a malformed Content-Length at all.
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {CLIENT_KEY}".encode()), (b"content-length", b"12abc")],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await gateway(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    assert b"content-length" in sent[1]["body"].lower()  # type: ignore[union-attr]
