"""The transport logic shared by the httpx2 and httpx flavours (same API, different modules).

Each flavour's classes combine one mixin here with that library's ``BaseTransport`` /
``SyncByteStream`` (which its ``Client`` and ``Response`` check for) and name the module in
``_lib``. Requests and responses are that library's objects, hence typed ``Any`` here.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Final, NoReturn

import anyio

from outlay._errors import OutlayError

from ._core import Meter, MeteredCall, StreamMeter, for_sdk

__all__ = [
    "DOWNGRADE_HEADER",
    "AsyncStreamMixin",
    "AsyncTransportMixin",
    "SyncStreamMixin",
    "SyncTransportMixin",
]

DOWNGRADE_HEADER = "x-outlay-downgraded-from"


_METERED: Final = "outlay.metered"


def _admit(meter: Meter, lib: Any, request: Any, body: bytes) -> tuple[MeteredCall | None, Any]:
    if request.extensions.get(_METERED):  # a metering transport outside this one has it already
        return None, request
    endpoint = meter.endpoint(request.method, request.url.host, request.url.path)
    if endpoint is None:
        return None, request
    try:
        call = meter.admit(endpoint, body)
    except OutlayError as exc:  # refused (budget, no tenant...): the provider never sees it
        raise for_sdk(exc, request.headers) from None
    if call is None:
        return None, request
    headers = request.headers.copy()
    content = body if call.body is None else call.body
    headers["content-length"] = str(len(content))
    headers.pop("transfer-encoding", None)
    if call.stream:
        # Usage is read from the bytes as they pass: ask for them uncompressed (SSE gains little).
        headers["accept-encoding"] = "identity"
    # Only the copy sent on is marked, so a transport wrapped inside this one meters nothing twice;
    # the caller's request stays unmarked, as does a redirect the client builds from it (a new
    # request to the provider, metered in its turn).
    sent = lib.Request(
        request.method, request.url, headers=headers, content=content,
        extensions={**request.extensions, _METERED: True},
    )  # fmt: skip
    return call, sent


def _unretried(exc: OutlayError, request: Any) -> NoReturn:
    """Raise ``exc``, which failed recording a call the provider answered, so that the SDK does
    not retry it (the provider billed it: a retry is billed again)."""
    raise for_sdk(exc, request.headers) from exc.__cause__


def _decoded(lib: Any, headers: Any, raw: bytes) -> bytes | None:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    try:  # decode a copy with the library's own decoders; the SDK still gets the raw bytes
        decoded: bytes = lib.Response(200, headers={"content-encoding": encoding}, content=raw).content
    except lib.DecodingError:
        return None
    return decoded


def _mark(call: MeteredCall, response: Any) -> None:
    if call.downgraded_from is not None:
        response.headers[DOWNGRADE_HEADER] = call.downgraded_from


# Threads running a garbage collection right now. A stream left unclosed (the reader broke out of
# its loop) is closed by the collector: the SDK's stream generator sits in a reference cycle, so its
# ``finally: response.close()`` runs at whatever allocation triggers a collection -- possibly inside
# outlay's own recording on this thread (the event log's group commit, a budget store's lock or
# transaction), where recording again deadlocks or fails. Such a close records from a thread of its own.
_COLLECTING: set[int] = set()


def _track_collections(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _COLLECTING.add(threading.get_ident())
    else:
        _COLLECTING.discard(threading.get_ident())


gc.callbacks.append(_track_collections)


class SyncStreamMixin:
    """A response stream passed on chunk by chunk while its usage is read."""

    def __init__(self, wrapped: Any, meter: StreamMeter) -> None:
        self._wrapped = wrapped
        self._meter = meter

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._wrapped:
                out = self._meter.feed(chunk)
                if out:
                    yield out
            rest = self._meter.flush()
        except GeneratorExit:
            raise  # the reader stopped early: close() records it
        except BaseException as exc:
            self._meter.end(exc)
            raise
        # Read to the end: durable before the reader sees the stream finish.
        self._meter.end()
        if rest:
            yield rest

    def close(self) -> None:
        try:
            self._wrapped.close()
        finally:
            if threading.get_ident() in _COLLECTING:  # an abandoned stream, closed by the collector
                _end_elsewhere(self._meter)
            else:
                self._meter.end()

    def __del__(self) -> None:
        _ended_unclosed(getattr(self, "_meter", None))  # None: its __init__ never finished


def _ended_unclosed(meter: StreamMeter | None) -> None:
    # The stream was dropped unclosed -- possibly never read (``create(stream=True)`` and nothing
    # after it), so no generator of the SDK's ever ran to close it: the provider billed the call all
    # the same. Record it (usage unknown: the estimate is charged) from a thread of its own, as the
    # collector may drop it anywhere, in the middle of outlay's own recording included.
    if meter is not None and not meter.ended:
        _end_elsewhere(meter)


def _end_elsewhere(meter: StreamMeter) -> None:
    try:
        threading.Thread(target=meter.end, name="outlay-stream-end").start()
    except RuntimeError:  # the interpreter is shutting down: no new threads, and nothing else runs
        meter.end()


class AsyncStreamMixin:
    def __init__(self, wrapped: Any, meter: StreamMeter) -> None:
        self._wrapped = wrapped
        self._meter = meter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._wrapped:
                out = self._meter.feed(chunk)
                if out:
                    yield out
            rest = self._meter.flush()
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            raise  # the reader stopped early (or was cancelled): aclose() records it
        except BaseException as exc:
            await _off_loop(self._meter.end, exc)
            raise
        await _off_loop(self._meter.end)
        if rest:
            yield rest

    async def aclose(self) -> None:
        try:
            await self._wrapped.aclose()
        finally:
            await _off_loop(self._meter.end)

    def __del__(self) -> None:
        _ended_unclosed(getattr(self, "_meter", None))  # None: its __init__ never finished


async def _off_loop(func: Any, *args: Any) -> None:
    # Recording waits for a durable commit: do it in a thread, and shielded, so a cancelled reader
    # (a timeout, a disconnect) still gets its call recorded and its reservation settled.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(func, *args)


def _sent(lib: Any, exc: BaseException) -> bool:
    """Whether the request may have reached the provider: a failed connect, or a wait for a pooled
    connection that timed out, surely did not."""
    return not isinstance(exc, lib.ConnectError | lib.ConnectTimeout | lib.PoolTimeout)


class SyncTransportMixin:
    _lib: ClassVar[Any]
    _stream_class: ClassVar[type[SyncStreamMixin]]
    _wrapped: Any
    _meter: Meter

    def handle_request(self, request: Any) -> Any:
        call, request = _admit(self._meter, self._lib, request, request.read())
        if call is None:
            return self._wrapped.handle_request(request)
        try:
            response = self._wrapped.handle_request(request)
        except BaseException as exc:
            call.failed(sent=_sent(self._lib, exc))
            raise
        _mark(call, response)
        if call.stream and response.status_code < 300:
            response.stream = self._stream_class(response.stream, call.stream_meter(response.headers))
            return response
        try:
            raw = b"".join(response.stream)
        except BaseException:
            call.failed(sent=True)  # the answer had begun: the provider bills it
            raise
        finally:
            response.stream.close()
        response.stream = self._lib.ByteStream(raw)
        try:
            call.answered(response.status_code, _decoded(self._lib, response.headers, raw), response.headers)
        except OutlayError as exc:
            _unretried(exc, request)
        return response

    def close(self) -> None:
        self._wrapped.close()


class AsyncTransportMixin:
    _lib: ClassVar[Any]
    _stream_class: ClassVar[type[AsyncStreamMixin]]
    _wrapped: Any
    _meter: Meter

    async def handle_async_request(self, request: Any) -> Any:
        call, request = _admit(self._meter, self._lib, request, await request.aread())
        if call is None:
            return await self._wrapped.handle_async_request(request)
        try:
            response = await self._wrapped.handle_async_request(request)
        except BaseException as exc:
            await _off_loop(call.failed, _sent(self._lib, exc))
            raise
        _mark(call, response)
        if call.stream and response.status_code < 300:
            response.stream = self._stream_class(response.stream, call.stream_meter(response.headers))
            return response
        try:
            raw = b"".join([chunk async for chunk in response.stream])
        except BaseException:
            await _off_loop(call.failed, True)  # the answer had begun: the provider bills it
            raise
        finally:
            await response.stream.aclose()
        response.stream = self._lib.ByteStream(raw)
        try:
            await _off_loop(
                call.answered,
                response.status_code,
                _decoded(self._lib, response.headers, raw),
                response.headers,
            )
        except OutlayError as exc:
            _unretried(exc, request)
        return response

    async def aclose(self) -> None:
        await self._wrapped.aclose()
