"""Usage from a streamed response, read incrementally while the stream passes through untouched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from outlay._errors import InvalidUsage
from outlay._usage import Usage

from ._anthropic import AnthropicStream
from ._base import StreamState
from ._common import check_headers, header_tier, sdk_dump, with_tier
from ._google import GoogleStream
from ._openai import OpenAIStream
from ._registry import normalize_api, normalize_provider, wire_format
from ._sse import SSEDecoder

__all__ = ["StreamAccumulator", "stream_accumulator", "usage_from_stream"]


def _state(fmt: str, api: str | None) -> StreamState:
    if fmt == "openai":
        return OpenAIStream(api)
    if fmt == "anthropic":
        return AnthropicStream()
    return GoogleStream()


class StreamAccumulator:
    """Reads one streamed response's usage as its bytes or events go by.

    ``feed(chunk)`` takes raw SSE bytes (or text) cut anywhere; ``feed_event(event)`` takes one decoded
    event (a dict or an official SDK event object). Each feed costs time proportional to the chunk
    and keeps only the unfinished line, the latest usage and a few ids, so it can sit on a stream
    that is passed on unbuffered. Feeding never raises on what the provider sent: a malformed event
    is remembered and :meth:`usage` raises :class:`~outlay.InvalidUsage` naming it.

    :meth:`usage` can be called at any time; until the provider's final usage has arrived it returns
    the counts seen so far with ``complete=False`` and a reason. Call :meth:`close` when the byte
    stream ends so an unterminated last line is read too.

    ``headers`` are the stream's HTTP response headers, if you have them: a tier the Gemini API
    names in ``x-gemini-service-tier`` is used when no event names one (see :func:`parse_response`).
    """

    __slots__ = ("_closing", "_decoder", "_error", "_events", "_header_tier", "_state", "api", "provider")

    def __init__(
        self, provider: str, api: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.provider = normalize_provider(provider)
        fmt = wire_format(self.provider)
        self.api = normalize_api(fmt, api)
        self._state = _state(fmt, self.api)
        # Anthropic names its tier in the body, and the Gemini header is none of its business.
        self._header_tier = (
            None if headers is None or fmt == "anthropic" else header_tier(check_headers(headers))
        )
        self._decoder = SSEDecoder(self._on_data)
        self._error: InvalidUsage | None = None
        self._events = 0
        self._closing = False

    @property
    def model(self) -> str | None:
        """The model the provider reports serving (price this one), once an event has named it."""
        return self._state.model

    @property
    def response_id(self) -> str | None:
        return self._state.response_id

    @property
    def provider_error(self) -> str | None:
        """The error the provider sent in the stream (an Anthropic ``error`` event, OpenAI's
        ``error`` or ``response.failed``): the stream broke, however it was read to its end."""
        return self._state.provider_error

    @property
    def done(self) -> bool:
        """The provider signalled the end of the stream (``[DONE]``, ``message_stop``, a terminal
        Responses event, a ``finishReason``) or reported an error in it."""
        return self._state.done

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> None:
        if isinstance(chunk, str):
            chunk = chunk.encode()
        elif not isinstance(chunk, bytes):
            if not isinstance(chunk, bytearray | memoryview):
                raise InvalidUsage(f"expected bytes or str, got {type(chunk).__name__}", field="chunk")
            chunk = bytes(chunk)
        try:
            self._decoder.feed(chunk)
        except InvalidUsage as exc:
            self._remember(exc)

    def feed_event(self, event: Mapping[str, Any] | object) -> None:
        """One decoded event: a dict as the provider sent it, or an SDK stream event object."""
        self._events += 1
        data = dict(event) if isinstance(event, Mapping) else sdk_dump(event)
        if data is None:
            raise InvalidUsage(
                f"expected a dict or an SDK event object, got {type(event).__name__}",
                field=f"event {self._events}",
            )
        self._dispatch(data, self._label(data))

    def close(self) -> None:
        """The byte stream ended: read an unterminated last line or event (if it is whole)."""
        self._closing = True
        try:
            self._decoder.close()
        except InvalidUsage as exc:
            self._remember(exc)

    def usage(self) -> Usage:
        """The usage so far: complete once the provider's final counts arrived, else a lower bound."""
        if self._error is not None:
            raise self._error
        tier = self._state.service_tier
        return with_tier(self._state.usage(), self._header_tier if tier is None else tier)

    # -- internals ---------------------------------------------------------------------------------

    def _remember(self, error: InvalidUsage) -> None:
        if self._error is None:
            self._error = error

    def _label(self, event: Mapping[str, Any]) -> str:
        kind = event.get("type")
        return f"event {self._events} ({kind})" if isinstance(kind, str) else f"event {self._events}"

    def _on_data(self, payload: bytes, final: bool) -> bool:
        self._events += 1
        if not final:
            if payload == b"[DONE]":
                self._state.on_done_marker()
                return True
            body = payload.strip()
            if not (body.startswith(b"{") and body.endswith(b"}")):
                self._events -= 1
                return False  # not a whole JSON object on one line: wait for the event's end
            if not self._state.wants(payload):
                return True
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            if self._closing:
                return True  # the line the stream was cut in: the usage says it is incomplete
            self._remember(InvalidUsage(f"invalid JSON in data: {exc}", field=f"event {self._events}"))
            return True
        if not isinstance(event, dict):
            self._remember(
                InvalidUsage(
                    f"expected a JSON object, got {type(event).__name__}", field=f"event {self._events}"
                )
            )
            return True
        self._dispatch(event, self._label(event))
        return True

    def _dispatch(self, event: dict[str, Any], label: str) -> None:
        try:
            self._state.on_event(event, label)
        except InvalidUsage as exc:
            self._remember(exc)


def stream_accumulator(
    provider: str, api: str | None = None, *, headers: Mapping[str, str] | None = None
) -> StreamAccumulator:
    """A :class:`StreamAccumulator` for one stream of ``provider`` (``api`` and ``headers`` as in
    usage_from_response)."""
    return StreamAccumulator(provider, api, headers=headers)


_RAW = (bytes, bytearray, memoryview)


def usage_from_stream(
    provider: str, sse: object, api: str | None = None, *, headers: Mapping[str, str] | None = None
) -> Usage:
    """Usage of a whole streamed response.

    ``sse`` is the SSE text or bytes, or an iterable of: raw byte chunks (``bytes``, cut anywhere, as
    ``httpx.Response.iter_bytes()`` yields them), text lines (``str``, with or without their line
    end, as ``iter_lines()`` yields them), event dicts, or official SDK event objects. ``headers``:
    the response's HTTP headers, as in :func:`parse_response`.
    """
    acc = StreamAccumulator(provider, api, headers=headers)
    if isinstance(sse, (*_RAW, str)):
        acc.feed(sse)
    elif isinstance(sse, Mapping) or not isinstance(sse, Iterable):
        raise InvalidUsage(
            f"expected SSE text/bytes or an iterable of chunks, lines or events, got {type(sse).__name__}",
            field="sse",
        )
    else:
        for i, item in enumerate(sse):
            if isinstance(item, _RAW):
                acc.feed(item)
            elif isinstance(item, str):
                acc.feed(item[:-1] + "\n" if item.endswith("\n") else item + "\n")
            elif isinstance(item, Mapping) or hasattr(item, "model_dump"):
                acc.feed_event(item)
            else:
                raise InvalidUsage(
                    f"expected bytes, a text line, an event dict or an SDK event, got {type(item).__name__}",
                    field=f"sse[{i}]",
                )
    acc.close()
    return acc.usage()
