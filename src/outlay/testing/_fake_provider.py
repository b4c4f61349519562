"""``FakeProvider``: an ASGI app that answers like OpenAI, Anthropic and Gemini, for tests and benchmarks.

It speaks the providers' documented wire formats closely enough that the official ``openai`` and
``anthropic`` SDKs parse every answer, with deterministic token counts derived from the request:

- input tokens  = ``max(1, characters // 4) + 4 * messages`` (all text in messages/input/system),
- output tokens = ``min(max_tokens, behaviour.output_tokens)``,
- cached / cache-write / reasoning tokens come from the model's :class:`ModelBehaviour`.

Faults are queued with :meth:`FakeProvider.fail` and consumed one request at a time; every request
received is recorded (method, path, headers, body) so a test can assert what reached "the provider".
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from . import _wire
from ._asgi import Receive, Scope, Send, read_body, send_bytes, wait_for_disconnect

__all__ = [
    "FakeProvider",
    "Fault",
    "ModelBehaviour",
    "RecordedRequest",
    "count_input_tokens",
    "quiet_injected_drops",
]

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_SKIP_KEYS = frozenset({"role", "type", "id", "cache_control", "model"})
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}

Api = Literal[
    "chat", "responses", "embeddings", "messages", "count_tokens", "models", "model", "generate_content"
]
Dialect = Literal["openai", "anthropic", "gemini"]

# Gemini's own API: POST /v1beta/models/{model}:generateContent | :streamGenerateContent?alt=sse
_GEMINI_NATIVE: Final = re.compile(
    r"/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"
)
# GET /v1/models/{id} (OpenAI and Anthropic), /v1beta/openai/models/{id} (Gemini's OpenAI API)
_MODEL: Final = re.compile(r"(?P<prefix>/v1|/v1beta/openai)/models/(?P<model>.+)")
_ROUTES: dict[tuple[str, str], tuple[Dialect, Api]] = {
    ("POST", "/v1/chat/completions"): ("openai", "chat"),
    ("POST", "/v1/responses"): ("openai", "responses"),
    ("POST", "/v1/embeddings"): ("openai", "embeddings"),
    ("GET", "/v1/models"): ("openai", "models"),
    ("POST", "/v1/messages"): ("anthropic", "messages"),
    ("POST", "/v1/messages/count_tokens"): ("anthropic", "count_tokens"),
    ("POST", "/v1beta/openai/chat/completions"): ("gemini", "chat"),
    ("POST", "/v1beta/openai/embeddings"): ("gemini", "embeddings"),
    ("GET", "/v1beta/openai/models"): ("gemini", "models"),
}


@dataclass(frozen=True, slots=True)
class ModelBehaviour:
    """How the fake answers for one model (or glob of models)."""

    output_tokens: int = 16
    cached_tokens: int = 0  # OpenAI prompt cache hits / Anthropic cache reads (capped at the input)
    cache_write_tokens: int = 0  # Anthropic cache creation (capped at what is left of the input)
    reasoning_tokens: int = 0  # part of the output (capped at it)
    dimensions: int = 8  # embedding size
    #: The tier the fake says served the call (``priority``, ``flex``, ``batch``...); ``None`` is the
    #: standard one, or for OpenAI's APIs the ``service_tier`` the request asked for, as OpenAI echoes it.
    service_tier: str | None = None
    #: Where a Gemini answer names the tier: ``"trafficType"`` in ``usageMetadata`` as Vertex AI does
    #: (only when not standard); ``"header"``, the ``x-gemini-service-tier`` response header of the
    #: Gemini API (``standard`` included), on its own and its OpenAI-compatible endpoints, whole and
    #: streamed, with no tier in the body; ``"serviceTier"`` in ``usageMetadata``, as newer Gemini API
    #: answers do (https://ai.google.dev/gemini-api/docs/priority-inference).
    gemini_tier_as: Literal["trafficType", "header", "serviceTier"] = "trafficType"


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure to inject. Build one with :meth:`status`, :meth:`drop` or :meth:`hang`."""

    kind: Literal["status", "drop", "hang"]
    status: int = 500
    retry_after: int | None = None
    message: str | None = None
    after_chunks: int = 1  # drop: stream events (or half the body) sent before the connection drops
    code: str | None = None  # status: OpenAI's error code and param (context_length_exceeded, ...)
    param: str | None = None
    type: str | None = None  # status: the provider's error type, if not the status's usual one
    mid_event: bool = False  # drop: cut the stream inside an event, not between two
    should_retry: bool | None = None  # status: the x-should-retry header both providers may send

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: int | None = None,
        message: str | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,  # the provider's own word for it
        should_retry: bool | None = None,
    ) -> Fault:
        """Answer with HTTP ``status`` and an error body in the provider's own format."""
        return cls(
            "status",
            status=status,
            retry_after=retry_after,
            message=message,
            code=code,
            param=param,
            type=type,
            should_retry=should_retry,
        )

    @classmethod
    def drop(cls, *, after_chunks: int = 1, mid_event: bool = False) -> Fault:
        """Close the connection mid-response (mid-stream for streams, mid-body otherwise); with
        ``mid_event``, a stream drops half-way through the event after ``after_chunks``."""
        return cls("drop", after_chunks=after_chunks, mid_event=mid_event)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer; the request ends when the client gives up (or the provider is closed)."""
        return cls("hang")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _DroppedConnection(Exception):
    """Raised after a partial response: the server aborts the connection, as a real network drop would."""


def quiet_injected_drops(record: logging.LogRecord) -> bool:
    """Logging filter for ``uvicorn.error``: an injected drop is not a server bug worth a traceback."""
    return not (record.exc_info and isinstance(record.exc_info[1], _DroppedConnection))


@dataclass
class _QueuedFault:
    fault: Fault
    path: str | None
    remaining: int


def _texts(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _SKIP_KEYS:
                yield from _texts(item)


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """The fake's deterministic input token count for a generation request body."""
    keys = ("messages", "input", "system", "instructions", "contents", "systemInstruction")
    chars = sum(len(t) for k in keys for t in _texts(body.get(k)))
    messages = body.get("messages")
    count = len(messages) if isinstance(messages, list) else 1
    return max(1, chars // 4) + 4 * count


class FakeProvider:
    """ASGI app answering as OpenAI (``/v1/...``), Anthropic (``/v1/messages``) and Gemini
    (``/v1beta/openai/...``).

    ``latency`` delays the first byte; ``chunks`` is the number of text pieces a stream carries and
    ``chunk_delay`` the pause between them. ``behaviours`` maps a model name or glob to its
    :class:`ModelBehaviour`. ``api_key``, when set, must be presented (``Authorization: Bearer`` or
    ``x-api-key``) or the request gets a 401 in the provider's format.
    """

    def __init__(
        self,
        *,
        behaviours: Mapping[str, ModelBehaviour] | None = None,
        default: ModelBehaviour | None = None,
        chunks: int = 4,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-haiku-4-5"),
        record: bool = True,
    ) -> None:
        self.behaviours = dict(behaviours or {})
        self.default = default or ModelBehaviour()
        self.chunks = max(1, chunks)
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.api_key = api_key
        self.models = models
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._faults: list[_QueuedFault] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._counter = 0

    # -- test controls ---------------------------------------------------------------------------

    def fail(self, fault: Fault, *, times: int = 1, path: str | None = None) -> None:
        """Inject ``fault`` into the next ``times`` requests (to ``path`` only, if given)."""
        with self._lock:
            self._faults.append(_QueuedFault(fault, path, times))

    def reset(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def close(self) -> None:
        """Release every hanging request (call before stopping the server)."""
        self._closed.set()

    def behaviour(self, model: str) -> ModelBehaviour:
        if model in self.behaviours:
            return self.behaviours[model]
        for pattern, behaviour in self.behaviours.items():
            if fnmatch.fnmatchcase(model, pattern):
                return behaviour
        return self.default

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for queued in self._faults:
                if queued.path in (None, path) and queued.remaining > 0:
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._faults.remove(queued)
                    return queued.fault
        return None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._counter:012x}"

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.record:
            self.requests.append(RecordedRequest(method, path, headers, body))
        route = _ROUTES.get((method, path.rstrip("/")))
        native = _GEMINI_NATIVE.fullmatch(path) if route is None and method == "POST" else None
        if native is not None:  # /v1beta/models/{model}:generateContent (or :streamGenerateContent)
            route = ("gemini", "generate_content")
        one_model = _MODEL.fullmatch(path) if route is None and method == "GET" else None
        if one_model is not None:
            route = ("gemini" if one_model["prefix"] == "/v1beta/openai" else "openai", "model")
        if route is None:
            await self._error(send, "openai", 404, f"Unknown request URL: {method} {path}")
            return
        dialect, api = route
        if api in ("models", "model") and "anthropic-version" in headers:
            dialect = "anthropic"
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.api_key is not None and self.api_key not in (
            headers.get("x-api-key"),
            headers.get("authorization", "").removeprefix("Bearer "),
        ):
            await self._error(send, dialect, 401, "Incorrect API key provided.")
            return
        if dialect == "anthropic" and api != "models" and "anthropic-version" not in headers:
            await self._error(send, dialect, 400, "anthropic-version: header is required")
            return
        fault = self._take_fault(path)
        if fault is not None and fault.kind == "status":
            await self._error(
                send, dialect, fault.status, fault.message, retry_after=fault.retry_after, fault=fault
            )
            return
        if fault is not None and fault.kind == "hang":
            await wait_for_disconnect(receive, self._closed)
            return
        if api == "models":
            await send_bytes(send, 200, self._models_body(dialect), "application/json")
            return
        if one_model is not None:
            found = self._model_body(dialect, one_model["model"])
            if found is None:
                await self._error(send, dialect, 404, f"model: {one_model['model']}")
            else:
                await send_bytes(send, 200, found, "application/json")
            return
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise TypeError("not an object")
            if native is not None:  # Gemini names the model, and streaming, in the path
                request = {
                    **request,
                    "model": native["model"],
                    "stream": native["method"] == "streamGenerateContent",
                }
            model = request["model"]
            if not isinstance(model, str):
                raise TypeError("model is not a string")
        except (ValueError, TypeError, KeyError) as exc:
            await self._error(send, dialect, 400, f"Invalid request body: {exc}")
            return
        if api == "count_tokens":
            # https://docs.anthropic.com/en/api/messages-count-tokens: a Messages request without
            # max_tokens in, {"input_tokens": N} out; free, and counted as _generate counts input.
            if not isinstance(request.get("messages"), list):
                await self._error(send, dialect, 400, "messages: Field required")
                return
            counted = json.dumps({"input_tokens": count_input_tokens(request)}).encode()
            await send_bytes(send, 200, counted, "application/json")
            return
        await self._generate(send, dialect, api, request, fault)

    async def _generate(
        self, send: Send, dialect: Dialect, api: Api, request: dict[str, Any], fault: Fault | None
    ) -> None:
        model: str = request["model"]
        behaviour = self.behaviour(model)
        stream = request.get("stream") is True
        if api == "embeddings":
            texts = request.get("input")
            texts = [texts] if isinstance(texts, str) else [str(t) for t in texts or []]
            tokens = sum(max(1, len(t) // 4) for t in texts)
            dims = request.get("dimensions") or behaviour.dimensions
            encoding = request.get("encoding_format") or "float"
            body = _wire.embeddings(model, texts, tokens, dimensions=int(dims), encoding=encoding)
            await self._respond(send, body, fault)
            return
        reply = self._reply(api, model, request, behaviour)
        head: list[tuple[bytes, bytes]] = []
        if dialect == "gemini" and behaviour.gemini_tier_as != "trafficType":
            reply = replace(reply, gemini_tier_as=behaviour.gemini_tier_as)
            if behaviour.gemini_tier_as == "header":
                head.append((b"x-gemini-service-tier", (reply.service_tier or "standard").encode()))
        if api == "generate_content":
            if stream:
                await self._stream(send, _wire.gemini_stream(reply), fault, head)
            else:
                await self._respond(send, _wire.gemini_response(reply), fault, head)
            return
        if api == "chat":
            if stream:
                options = request.get("stream_options") or {}
                events = _wire.chat_stream(reply, include_usage=options.get("include_usage") is True)
                await self._stream(send, events, fault, head)
            else:
                await self._respond(send, _wire.chat_completion(reply), fault, head)
        elif api == "responses":
            if stream:
                await self._stream(send, _wire.responses_stream(reply), fault)
            else:
                await self._respond(send, _wire.responses_object(reply), fault)
        elif stream:
            await self._stream(send, _wire.anthropic_stream(reply), fault)
        else:
            await self._respond(send, _wire.anthropic_message(reply), fault)

    def _reply(
        self, api: Api, model: str, request: Mapping[str, Any], behaviour: ModelBehaviour
    ) -> _wire.Reply:
        input_tokens = count_input_tokens(request)
        config = request.get("generationConfig")
        limit = (
            request.get("max_tokens")
            or request.get("max_completion_tokens")
            or request.get("max_output_tokens")
            or (config.get("maxOutputTokens") if isinstance(config, dict) else None)
        )
        output = behaviour.output_tokens
        if isinstance(limit, int) and limit < output:
            output = limit
        cached = min(behaviour.cached_tokens, input_tokens)
        cache_write = min(behaviour.cache_write_tokens, input_tokens - cached)
        tier = behaviour.service_tier
        asked = request.get("service_tier")
        if tier is None and api in ("chat", "responses") and asked in ("priority", "flex"):
            tier = asked
        words = [_WORDS[i % len(_WORDS)] for i in range(output)]
        pieces = self._split(" ".join(words))
        prefix = {"chat": "chatcmpl-", "responses": "resp_", "messages": "msg_"}.get(api, "id-")
        return _wire.Reply(
            id=self._next_id(prefix),
            model=model,
            pieces=pieces,
            input_tokens=input_tokens,
            output_tokens=output,
            cached_tokens=cached,
            cache_write_tokens=cache_write if api == "messages" else 0,
            reasoning_tokens=min(behaviour.reasoning_tokens, output),
            finish="length" if output < behaviour.output_tokens else "stop",
            service_tier=tier,
        )

    def _split(self, text: str) -> tuple[str, ...]:
        if not text:
            return ("",)
        size = -(-len(text) // self.chunks)
        return tuple(text[i : i + size] for i in range(0, len(text), size))

    def _model_body(self, dialect: Dialect, model: str) -> bytes | None:
        """One model as GET /v1/models/{id} answers it, or None for a model the fake does not serve."""
        if model not in self.models:
            return None
        if dialect == "anthropic":
            found: dict[str, object] = {
                "type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z",
            }  # fmt: skip
        else:
            owner = "google" if dialect == "gemini" else "openai"
            found = {"id": model, "object": "model", "created": 1700000000, "owned_by": owner}
        return json.dumps(found).encode()

    def _models_body(self, dialect: Dialect) -> bytes:
        if dialect == "anthropic":
            data: list[dict[str, object]] = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models
            ]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return json.dumps({"data": data, "has_more": False, "first_id": first, "last_id": last}).encode()
        owner = "google" if dialect == "gemini" else "openai"
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": owner} for m in self.models]
        return json.dumps({"object": "list", "data": data}).encode()

    async def _respond(
        self, send: Send, body: bytes, fault: Fault | None, head: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        if fault is not None and fault.kind == "drop":
            # Promise the whole body, send half: the client sees a truncated response.
            await send_bytes(
                send, 200, body[: len(body) // 2], "application/json", length=len(body), more=True
            )
            raise _DroppedConnection("fake provider dropped the connection mid-body")
        await send_bytes(send, 200, body, "application/json", headers=head)

    async def _stream(
        self,
        send: Send,
        events: Iterator[bytes],
        fault: Fault | None,
        head: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    *(head or []),
                ],
            }
        )
        for sent, event in enumerate(events):
            if fault is not None and fault.kind == "drop" and sent >= fault.after_chunks:
                if fault.mid_event:
                    await send(
                        {"type": "http.response.body", "body": event[: len(event) // 2], "more_body": True}
                    )
                raise _DroppedConnection("fake provider dropped the connection mid-stream")
            if sent and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _error(
        self,
        send: Send,
        dialect: Dialect,
        status: int,
        message: str | None,
        *,
        retry_after: int | None = None,
        fault: Fault | None = None,
    ) -> None:
        text = message or f"fake provider error {status}"
        own_type = fault.type if fault is not None else None
        if dialect == "anthropic":
            body = _wire.anthropic_error(
                text, own_type or _ANTHROPIC_TYPE.get(status, "api_error"), self._next_id("req_")
            )
        elif dialect == "gemini":
            body = _wire.gemini_error(text, status, _GEMINI_STATUS.get(status, "UNKNOWN"))
        else:
            code = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)
            if fault is not None and fault.code is not None:
                code = fault.code
            param = fault.param if fault is not None else None
            body = _wire.openai_error(text, own_type or _OPENAI_TYPE.get(status, "server_error"), code, param)
        extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
        if fault is not None and fault.should_retry is not None:
            extra.append((b"x-should-retry", b"true" if fault.should_retry else b"false"))
        await send_bytes(send, status, body, "application/json", headers=extra)
