"""``Gateway``: the ASGI app that meters, guards and forwards OpenAI- and Anthropic-compatible calls.

Per request: read the body (size-limited) -> authenticate -> parse and route the model -> admit
(budgets; may downgrade the model) -> forward on a pooled connection -> stream or return the answer
-> ``complete`` (settle, record). Every failure before the upstream answers is a 4xx/5xx in the
client's provider format; every admitted call is completed exactly once, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from outlay._errors import OutlayError
from outlay._money import money_str
from outlay._usage import Usage

from ._config import SERVES, Api, GatewayConfig, Upstream
from ._errors import (
    Dialect,
    GatewayError,
    from_outlay_error,
    from_transport_error,
    from_upstream_response,
    render,
)
from ._free_limit import FreeRateLimit
from ._hooks import Admission, Call, GatewayHooks, OpenHooks, Outcome, Principal, Settlement
from ._metering import read_response, read_stream, stream_accumulator
from ._models import model_page
from ._passthrough import MODEL_PREFIX, count_tokens, model_info
from ._streaming import HiddenUsageFilter, error_event, split_done
from ._upstreams import UpstreamError, UpstreamPool, UpstreamResponse

__all__ = ["Gateway"]

_ENDPOINTS: dict[str, tuple[str, Api | None]] = {
    "/v1/chat/completions": ("POST", "chat"),
    "/v1/responses": ("POST", "responses"),
    "/v1/embeddings": ("POST", "embeddings"),
    "/v1/messages": ("POST", "messages"),
    "/v1/models": ("GET", None),
}
# Free calls (no admission, no cost event): passed through as GET /v1/models is.
_FREE: dict[str, str] = {"/v1/messages/count_tokens": "POST", "/v1/models/{id}": "GET"}
_PATH_FOR = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
    "messages": "/v1/messages",
}
_PASS_HEADERS = ("x-request-id", "request-id")
# Where an admission's output_limit goes (Anthropic's max_tokens is required, so always given;
# chat's max_completion_tokens, unlike the older max_tokens, is taken by every current model).
_OUTPUT_LIMIT_FIELD = {"chat": "max_completion_tokens", "responses": "max_output_tokens"}


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One admitted call in flight: who to answer, in which format, and how to settle it."""

    admission: Admission
    dialect: Dialect
    receive: Receive
    send: Send
    complete: Callable[..., Awaitable[Settlement | None]]
    deadline: float = 0.0  # the event loop's time by which the call must be over (max_call_seconds)


def _header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _outlay_headers(settlement: Settlement | None, admission: Admission | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if settlement is not None:
        out["x-outlay-cost"] = "unknown" if settlement.cost is None else money_str(settlement.cost)
        remaining, known = settlement.budget_remaining, settlement.budget_known
    else:
        remaining = admission.budget_remaining if admission else None
        known = admission.budget_known if admission else True
        if admission is not None and admission.reserved is not None:
            out["x-outlay-cost-reserved"] = money_str(admission.reserved)
    if known:  # not known (the budget store unreachable): no figure rather than a wrong one
        out["x-outlay-budget-remaining"] = "unlimited" if remaining is None else money_str(remaining)
    if admission is not None and admission.downgraded_from is not None:
        out["x-outlay-model"] = admission.model
        out["x-outlay-downgraded-from"] = admission.downgraded_from
        out["x-outlay-model-downgraded"] = f"{admission.downgraded_from} -> {admission.model}"
    if (
        admission is not None
        and admission.output_limit is not None
        and admission.call.api in _OUTPUT_LIMIT_FIELD
    ):
        out["x-outlay-output-limit"] = str(admission.output_limit)  # cap_output: why an answer stopped
    return out


class Gateway:
    """ASGI app. ``hooks`` plug in keys, budgets and the ledger (default: :class:`OpenHooks`);
    ``trust_env`` lets the upstream client use the ``HTTP(S)_PROXY`` environment variables."""

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        hooks: GatewayHooks | None = None,
        trust_env: bool = True,
    ) -> None:
        self.config = config or GatewayConfig.from_env()
        self.hooks: GatewayHooks = hooks or OpenHooks()
        self.pool = UpstreamPool(self.config, trust_env=trust_env)
        self.free_limit = FreeRateLimit(self.config.free_requests_per_minute)

    async def aclose(self) -> None:
        """Close the upstream pools, then the hooks (which flush and close what they own)."""
        await self.pool.aclose()
        closer = getattr(self.hooks, "aclose", None)
        if closer is not None:
            await closer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"].rstrip("/") or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # Anthropic's paths, and any path an Anthropic SDK calls (it always sends anthropic-version),
        # get Anthropic's error format; the rest OpenAI's.
        anthropic = path.startswith("/v1/messages") or "anthropic-version" in headers
        dialect: Dialect = "anthropic" if anthropic else "openai"
        try:
            endpoint = _ENDPOINTS.get(path)
            free = "/v1/models/{id}" if path.startswith(MODEL_PREFIX) else path
            if endpoint is None and free in _FREE:
                if scope["method"] != _FREE[free]:
                    raise GatewayError(
                        405,
                        f"{path} accepts {_FREE[free]}, not {scope['method']}",
                        headers={"allow": _FREE[free]},
                    )
                await self._free(path, headers, dialect, receive, send)
                return
            if endpoint is None:
                raise GatewayError(
                    404, f"unknown endpoint {scope['method']} {scope['path']}", code="unknown_url"
                )
            if scope["method"] != endpoint[0]:
                raise GatewayError(
                    405,
                    f"{path} accepts {endpoint[0]}, not {scope['method']}",
                    headers={"allow": endpoint[0]},
                )
            api = endpoint[1]
            if api is None:
                await self._models(headers, dialect, send)
            else:
                await self._proxy(api, dialect, headers, receive, send)
        except GatewayError as error:
            await self._send_error(send, error, dialect)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool.start()
                # What exists now (price data, config, modules) lives as long as the process: keep
                # it out of the cyclic GC's full collections, whose pauses would land on requests.
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # The server has drained in-flight requests by now; every event is recorded.
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send_error(
        self, send: Send, error: GatewayError, dialect: Dialect, extra: Mapping[str, str] | None = None
    ) -> None:
        body = render(error, dialect)
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            **error.headers,
            **(extra or {}),
        }
        await send(
            {
                "type": "http.response.start",
                "status": error.status_for(dialect),
                "headers": _header_list(headers),
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise GatewayError(400, f"invalid Content-Length {declared!r}", param="content-length")
            if int(declared) > limit:
                raise GatewayError(
                    413,
                    f"request body of {declared} bytes is over the {limit}-byte limit",
                    code="request_too_large",
                )
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "client disconnected while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(
                    413, f"request body is over the {limit}-byte limit", code="request_too_large"
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _authenticate_and_parse(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[Any, dict[str, Any]]:
        try:
            principal = await self.hooks.authenticate(headers)
        except OutlayError as exc:
            raise from_outlay_error(exc) from None
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise GatewayError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise GatewayError(400, "request body is nested too deeply to be a provider request") from None
        if not isinstance(request, dict):
            raise GatewayError(400, f"request body must be a JSON object, got {type(request).__name__}")
        return principal, request

    def _route(self, api: Api, request: Mapping[str, Any]) -> tuple[str, Upstream, str]:
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "model: required, a non-empty string", param="model")
        resolved = self.config.resolve(model)
        if resolved is None:
            raise GatewayError(
                404,
                f"model {model!r} has no route: add a route or an alias for it",
                code="model_not_found",
                param="model",
            )
        upstream, upstream_model = resolved
        if api not in SERVES[upstream.kind]:
            hint = "/v1/messages" if upstream.kind == "anthropic" else "/v1/chat/completions"
            raise GatewayError(
                400,
                f"model {model!r} is served by upstream {upstream.name!r}"
                f" ({upstream.kind}), which does not serve {_PATH_FOR[api]}; use {hint}",
                param="model",
            )
        return model, upstream, upstream_model

    async def _proxy(
        self, api: Api, dialect: Dialect, headers: Mapping[str, str], receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        body = await self._read_body(headers, receive)
        principal, request = await self._authenticate_and_parse(headers, body)
        model, upstream, upstream_model = self._route(api, request)
        stream = request.get("stream")
        if stream is not None and type(stream) is not bool:
            # Streamed (and a chat stream asked for its usage) only on true: an upstream coercing
            # "true" or 1, as pydantic does, would stream with no usage and the call be under-recorded.
            shown = repr(stream) if len(repr(stream)) <= 80 else repr(stream)[:77] + "..."
            raise GatewayError(400, f"stream: must be true or false, got {shown}", param="stream")
        stream = stream is True
        call = Call(
            api, model, upstream_model, upstream, stream, request, headers, raw=body,
            max_seconds=self.config.max_call_seconds,
        )  # fmt: skip
        try:
            admission = await self.hooks.admit(principal, call)
        except OutlayError as exc:
            raise from_outlay_error(exc) from None
        completed = False

        async def complete(status: int, usage: Usage | None, **fields: Any) -> Settlement | None:
            nonlocal completed
            if completed:
                return None
            completed = True
            outcome = Outcome(status, usage, latency_s=time.perf_counter() - started, **fields)
            try:
                return await self.hooks.complete(admission, outcome)
            except OutlayError as exc:  # e.g. the ledger is down: the caller must not get a silent 200
                error = from_outlay_error(exc)
                if status < 400 or usage is None or not usage.is_empty:
                    # The provider answered (or may have) and bills it: both SDKs retry a 5xx
                    # by default, and each retry would be billed again — and go unrecorded too.
                    error.message += "; the provider may have billed this call, so it is not retried"
                    error.headers["x-should-retry"] = "false"
                raise error from None

        try:
            deadline = asyncio.get_running_loop().time() + admission.call.max_seconds
            exchange = _Exchange(admission, dialect, receive, send, complete, deadline)
            await self._forward(exchange, body, request)
        finally:
            if not completed:  # cancelled or crashed mid-way: still settle, with unknown usage
                await asyncio.shield(complete(499, None, model=None, error="request cancelled"))

    def _upstream_body(
        self, admission: Admission, body: bytes, request: dict[str, Any]
    ) -> tuple[bytes, bool]:
        """The bytes to send upstream, and whether the gateway added include_usage (to hide it)."""
        changed, hide_usage = False, False
        if request.get("model") != admission.model:
            request = {**request, "model": admission.model}
            changed = True
        limit_field = _OUTPUT_LIMIT_FIELD.get(admission.call.api)
        if admission.output_limit is not None and limit_field is not None:
            # The hold assumed at most this much output (the request gave no limit): make it so.
            request = {**request, limit_field: admission.output_limit}
            changed = True
        if admission.call.api == "chat" and admission.call.stream:
            options = request.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                extra = options if isinstance(options, dict) else {}
                request = {**request, "stream_options": {**extra, "include_usage": True}}
                changed = hide_usage = True
        return (json.dumps(request).encode() if changed else body), hide_usage

    async def _forward(self, exchange: _Exchange, body: bytes, request: dict[str, Any]) -> None:
        admission, dialect, send, complete = (
            exchange.admission,
            exchange.dialect,
            exchange.send,
            exchange.complete,
        )
        call = admission.call
        upstream = call.upstream
        payload, hide_usage = self._upstream_body(admission, body, request)
        try:
            async with asyncio.timeout_at(exchange.deadline):
                response = await self.pool.send(upstream, call.api, call.headers, payload)
        except (UpstreamError, TimeoutError) as exc:
            error, usage = _transport_error(exc, upstream.name, call.max_seconds)
            settlement = await complete(error.status, usage, model=None, error=str(error))
            await self._send_error(send, error, dialect, _outlay_headers(settlement, admission))
            return
        wire = "anthropic" if upstream.kind == "anthropic" else "openai"
        try:
            upstream_headers = response.headers
            passed = {k: upstream_headers[k] for k in _PASS_HEADERS if k in upstream_headers}
            if response.status >= 300:  # an error, or a redirect (not followed): never a success
                try:
                    error_body = await response.read()
                except UpstreamError:
                    error_body = b""  # the status says enough
                error = from_upstream_response(
                    response.status, error_body, upstream_headers, upstream.name, upstream.api_key
                )
                # Providers do not bill refused or failed requests: a known zero, not an unknown.
                settlement = await complete(error.status, Usage(), model=None, error=error.message)
                await self._send_error(
                    send, error, dialect, {**passed, **_outlay_headers(settlement, admission)}
                )
                return
            if upstream_headers.get("content-type", "").startswith("text/event-stream"):
                await self._stream(exchange, response, wire, hide_usage=hide_usage, passed=passed)
                return
            try:
                async with asyncio.timeout_at(exchange.deadline):
                    content = await response.read()
            except (UpstreamError, TimeoutError) as exc:
                error, _ = _transport_error(exc, upstream.name, call.max_seconds)
                settlement = await complete(error.status, None, model=None, error=str(error))
                await self._send_error(send, error, dialect, _outlay_headers(settlement, admission))
                return
            usage, model, response_id = read_response(wire, content, call.api, upstream_headers)
            settlement = await complete(response.status, usage, model=model, response_id=response_id)
            out = {
                "content-type": upstream_headers.get("content-type", "application/json"),
                "content-length": str(len(content)),
                **passed,
                **_outlay_headers(settlement, admission),
            }
            await send(
                {"type": "http.response.start", "status": response.status, "headers": _header_list(out)}
            )
            await send({"type": "http.response.body", "body": content})
        finally:
            await response.aclose()

    async def _stream(
        self,
        exchange: _Exchange,
        response: UpstreamResponse,
        wire: str,
        *,
        hide_usage: bool,
        passed: Mapping[str, str],
    ) -> None:
        admission, dialect, send, complete = (
            exchange.admission,
            exchange.dialect,
            exchange.send,
            exchange.complete,
        )
        receive = exchange.receive
        accumulator = stream_accumulator(wire, admission.call.api, headers=response.headers)
        events = HiddenUsageFilter(hide=hide_usage)
        done = b""  # OpenAI's closing [DONE], held until the call is recorded
        headers = {
            "content-type": response.headers.get("content-type", "text/event-stream"),
            "cache-control": "no-cache",
            **passed,
            **_outlay_headers(None, admission),
        }
        await send(
            {"type": "http.response.start", "status": response.status, "headers": _header_list(headers)}
        )
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        failure: GatewayError | None = None
        # A client that hangs up while the upstream is silent (a long think, a stall) must not wait
        # for the next chunk to be noticed: its disconnect cancels the read, at no cost per chunk.
        reading = asyncio.current_task()
        pumping = True

        def hang_up(_: object) -> None:
            if pumping and reading is not None:
                reading.cancel()

        disconnected.add_done_callback(hang_up)
        try:
            async with asyncio.timeout_at(exchange.deadline):
                async for chunk in response.chunks():
                    accumulator.feed(chunk)
                    out = events.feed(chunk)
                    if disconnected.done():
                        break  # stop paying for tokens nobody will read
                    if wire == "openai" and out:
                        out, done = split_done(out, done)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            if not disconnected.done() and (tail := events.flush()):
                tail, done = split_done(tail, done) if wire == "openai" else (tail, done)
                if tail:
                    await send({"type": "http.response.body", "body": tail, "more_body": True})
        except (UpstreamError, TimeoutError) as exc:
            failure, _ = _transport_error(exc, admission.call.upstream.name, admission.call.max_seconds)
        except OSError:  # the client went away while we were writing
            pass
        except asyncio.CancelledError:
            if not disconnected.done() or reading is None:
                raise  # a real cancellation (the server shutting down): not ours to swallow
            reading.uncancel()  # the client hung up: stop reading, then settle below
        finally:
            pumping = False
            gone = disconnected.done()
            disconnected.cancel()
        # What the provider reported is what it bills; a stream cut before its final usage gives a
        # lower bound flagged incomplete (the hooks bill an estimate for it, never zero).
        usage = read_stream(accumulator)
        if gone and not usage.complete:
            usage = replace(usage, reason=f"client disconnected mid-stream; {usage.reason}")
        try:
            await complete(
                response.status if failure is None else failure.status,
                usage,
                model=accumulator.model,
                response_id=accumulator.response_id,
                error=failure.message if failure else None,
                client_disconnected=gone,
            )
        except GatewayError as error:  # recording failed: the client must hear it, in the stream
            failure = failure or error
        if gone:
            return
        tail_event = error_event(failure, dialect) if failure is not None else done
        with contextlib.suppress(OSError):  # the client may be gone by now
            await send({"type": "http.response.body", "body": tail_event, "more_body": False})

    async def _free(
        self, path: str, headers: Mapping[str, str], dialect: Dialect, receive: Receive, send: Send
    ) -> None:
        if path.startswith(MODEL_PREFIX):
            try:
                principal = await self.hooks.authenticate(headers)
            except OutlayError as exc:
                raise from_outlay_error(exc) from None
            self._take_free(principal)
            body, head = await model_info(self.pool, headers, dialect, path.removeprefix(MODEL_PREFIX))
        else:
            raw = await self._read_body(headers, receive)
            principal, request = await self._authenticate_and_parse(headers, raw)
            self._take_free(principal)
            body, head = await count_tokens(self.pool, headers, request, raw)
        head = {**head, "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": 200, "headers": _header_list(head)})
        await send({"type": "http.response.body", "body": body})

    def _take_free(self, principal: Principal) -> None:
        """A 429 for a key past its free_requests_per_minute (the routes the cost limits never see)."""
        key = principal.key_id or principal.tenant_id or ""
        wait = self.free_limit.take(key)
        if wait:
            seconds = max(1, int(-(-wait // 1)))  # Retry-After is whole seconds, never 0
            raise GatewayError(
                429,
                f"this key made more than {self.free_limit.per_minute} requests a minute to the free"
                f" routes (model lists and lookups, token counts); retry in {seconds} s",
                code="rate_limit_exceeded",
                headers={"retry-after": str(seconds)},
            )

    async def _models(self, headers: Mapping[str, str], dialect: Dialect, send: Send) -> None:
        try:
            principal = await self.hooks.authenticate(headers)
        except OutlayError as exc:
            raise from_outlay_error(exc) from None
        self._take_free(principal)
        body = await model_page(self.pool, headers, dialect)
        head = {"content-type": "application/json", "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": 200, "headers": _header_list(head)})
        await send({"type": "http.response.body", "body": body})


def _transport_error(
    exc: UpstreamError | TimeoutError, upstream: str, max_seconds: float
) -> tuple[GatewayError, Usage | None]:
    """:func:`from_transport_error`, or a 504 for a call that ran past ``max_call_seconds`` (its
    usage unknown: the provider may have billed it, so it is never zero)."""
    if isinstance(exc, UpstreamError):
        return from_transport_error(exc, upstream)
    message = f"the call to {upstream} ran past the gateway's max_call_seconds ({max_seconds:g} s)"
    return GatewayError(504, message, code="call_too_long"), None


async def _wait_disconnect(receive: Receive) -> Message:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message
