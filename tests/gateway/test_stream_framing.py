"""SSE bytes an upstream sends in reads of its own choosing reach the client as sent, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from outlay._errors import BackendUnavailable
from outlay.gateway import Admission, Gateway, InMemoryHooks, Outcome, Principal, Settlement
from outlay.testing import LiveServer
from outlay.testing._asgi import Receive, Scope, Send, read_body

from .conftest import CLIENT_KEY, gateway_config, make_hooks


class ScriptedUpstream:
    """Answers every request with ``writes``: one SSE body write each, a little apart, so each is
    one read on the gateway's side."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for write in self.writes:
            await asyncio.sleep(0.02)
            await send({"type": "http.response.body", "body": write, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedUpstream, Gateway]]:
    upstream = ScriptedUpstream()
    with LiveServer(upstream) as up:
        app = Gateway(gateway_config(up.url), hooks=make_hooks(), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            app.url = gw.url  # type: ignore[attr-defined]
            yield upstream, app


def _chunk(text: str | None) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    if text is None:
        body = {
            **body,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


@pytest.mark.parametrize(
    "after",
    [
        [b"data: [DONE]\n\n", b": keep-alive\n\n"],  # a comment after [DONE], in a later read
        [b"data: [DONE]\n\n", b"\n"],  # a stray line end, in a later read
        [b"data: [DONE]\n\n: keep-alive\n\n"],  # the same, in the read of [DONE] itself
        [b"data: [DONE]"],  # [DONE] without its blank line, the stream ends
    ],
)
def test_done_and_what_follows_it_reach_the_client_in_order(
    scripted: tuple[ScriptedUpstream, Gateway], after: list[bytes]
) -> None:
    upstream, app = scripted
    app.hooks = make_hooks()
    upstream.writes = [_chunk("a"), _chunk("b"), _chunk(None), *after]
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},  # the client's own: nothing is hidden
    }
    answer = httpx.post(
        app.url + "/v1/chat/completions",  # type: ignore[attr-defined]
        json=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert answer.status_code == 200
    # [DONE] was dropped when anything came after it in a later read.
    assert answer.content == b"".join(upstream.writes)


class _LedgerDown(InMemoryHooks):
    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        raise BackendUnavailable("the event log is unreachable")


def test_done_followed_by_more_bytes_is_still_held_until_the_call_is_recorded(
    scripted: tuple[ScriptedUpstream, Gateway],
) -> None:
    upstream, app = scripted
    app.hooks = _LedgerDown({CLIENT_KEY: Principal("acme", key_id="k1")})
    upstream.writes = [_chunk("a"), _chunk(None), b"data: [DONE]\n\n: bye\n\n"]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}
    answer = httpx.post(
        app.url + "/v1/chat/completions",  # type: ignore[attr-defined]
        json=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    # The call could not be recorded: the stream ends in the error event, not in [DONE] (after which
    # an SDK reads nothing), even though the upstream sent more bytes after [DONE] in the same read.
    assert b"[DONE]" not in answer.content
    assert answer.content.endswith(b"}\n\n")
    assert b"backend unavailable" in answer.content.rsplit(b"data: ", 1)[-1]
