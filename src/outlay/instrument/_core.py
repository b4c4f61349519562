"""Metering one HTTP request, independent of the HTTP library: admission, then the answer or stream.

The transports (httpx2 and httpx, sync and async) only move bytes; this module decides what each
request costs. Admission runs :meth:`outlay.Recorder.open_meter` in the caller's cost context
*before* anything is sent, so a refused call never reaches the provider; the answer then finishes
or fails that same ``Metered`` call, which records the event durably and settles the reservation.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import orjson

from outlay._errors import InvalidInput, InvalidUsage, OutlayError
from outlay._usage import Usage, asked_tier
from outlay.providers import parse_response as _parse
from outlay.providers import stream_accumulator, wire_format

from ._endpoints import DEFAULT_MAX_OUTPUT_TOKENS, Endpoint, check_provider, classify, max_output_tokens
from ._filter import UsageChunkFilter

if TYPE_CHECKING:
    from outlay import Metered, Outlay, Recorder
    from outlay.budgets import BudgetEngine

__all__ = ["Meter", "MeteredCall", "StreamMeter", "for_sdk"]

#: Billed nothing: an HTTP error or redirect answer (providers do not charge for refused or failed
#: requests, nor generate for a request they redirect).
_NOTHING: Final = Usage()


class Meter:
    """Shared by every request of one transport: where events go and which budgets apply."""

    __slots__ = ("_budgets", "_outlay", "default_max_output_tokens", "provider")

    def __init__(
        self,
        *,
        outlay: Outlay | None = None,
        provider: str | None = None,
        budgets: BudgetEngine | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        value = default_max_output_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(
                f"expected a non-negative integer, got {value!r}", field="default_max_output_tokens"
            )
        self._outlay = outlay
        self._budgets = budgets
        self.provider = check_provider(provider)
        self.default_max_output_tokens = default_max_output_tokens

    @property
    def recorder(self) -> Recorder:
        # Looked up per call, so outlay.configure() after building the client still takes effect.
        if self._outlay is not None:
            return self._outlay.recorder
        from outlay import get_outlay

        return get_outlay().recorder

    def endpoint(self, method: str, host: str, path: str) -> Endpoint | None:
        return classify(method, host, path, self.provider)

    def admit(self, endpoint: Endpoint, body: bytes) -> MeteredCall | None:
        """Reserve budget for the request (raising BudgetExceeded/Throttled/RunStopped before it
        is sent); ``None`` when the body is not a JSON request naming a model (sent unmetered: the
        provider refuses it and bills nothing)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        model = endpoint.model or data.get("model")
        if not isinstance(model, str):
            return None
        stream = endpoint.stream or data.get("stream") is True
        metered = self.recorder.open_meter(
            provider=endpoint.provider,
            model=model,
            # About 4 bytes of JSON per token: the estimate errs high, as an admission bound should.
            input_tokens=len(body) // 4,
            max_output_tokens=max_output_tokens(endpoint.api, data, self.default_max_output_tokens),
            api=endpoint.api,
            operation=endpoint.operation,
            budgets=self._budgets,
            fingerprint=hashlib.sha256(body).hexdigest(),
            # A priority call is held at the priority price (never fails admission: see asked_tier).
            service_tier=asked_tier(data.get("service_tier")) if endpoint.api != "embeddings" else None,
        )
        changed = hide_usage = False
        if metered.downgraded:
            data["model"] = metered.model
            changed = True
        # Any server speaking OpenAI's format (a declared vLLM too) needs include_usage to report usage.
        if stream and endpoint.api == "chat" and wire_format(endpoint.wire) == "openai":
            options = data.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                data["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                changed = hide_usage = True
        return MeteredCall(endpoint, metered, stream, hide_usage, orjson.dumps(data) if changed else None)


class MeteredCall:
    """One admitted request. Exactly one of :meth:`answered`, :meth:`failed` or a stream's end
    records it; the others are then no-ops (a stream may be closed twice, from two places)."""

    __slots__ = ("body", "endpoint", "hide_usage", "metered", "stream")

    def __init__(
        self, endpoint: Endpoint, metered: Metered, stream: bool, hide_usage: bool, body: bytes | None
    ) -> None:
        self.endpoint = endpoint
        self.metered = metered
        self.stream = stream
        self.hide_usage = hide_usage
        self.body = body  # the body to send instead of the caller's (model downgraded, usage asked)

    @property
    def downgraded_from(self) -> str | None:
        return self.metered.requested_model if self.metered.downgraded else None

    def answered(self, status: int, content: bytes | None, headers: Mapping[str, str] | None = None) -> None:
        """A whole answer came back: record its usage (``content`` is the decoded body, ``None``
        when it could not be decoded; ``headers`` the answer's, where the Gemini API names the
        tier that served it) and settle — before the SDK sees the response."""
        if status >= 300:  # an error, or a redirect (the client sends the call again, metered anew)
            self.metered.fail(_NOTHING)
            return
        usage: Usage
        try:
            if content is None:
                raise InvalidUsage("the response body could not be decoded", field="body")
            parsed = _parse(self.endpoint.wire, content, self.endpoint.api, headers=headers)
        except InvalidUsage as exc:
            usage = Usage(complete=False, reason=f"no readable usage in the response ({exc})")
        else:
            usage = parsed.usage
            if parsed.model:
                self.metered.model = parsed.model
        self.metered.set_usage(usage)
        self.metered.finish()

    def failed(self, sent: bool = True) -> None:
        """The request failed before an answer. ``sent``: it may have reached the provider (a
        timeout, a drop), which may bill it: cost unknown. Otherwise (a failed connect) it surely
        never left: billed nothing, a known zero -- not an unknown cost in the unpriced report."""
        if sent:
            self.metered.fail(may_be_billed=True)
        else:
            self.metered.fail(_NOTHING)

    def stream_meter(self, headers: Mapping[str, str] | None = None) -> StreamMeter:
        return StreamMeter(self, headers)


class StreamMeter:
    """Reads usage from a stream as it passes; :meth:`end` records it once, however it ends."""

    __slots__ = ("_accumulator", "_call", "_ended", "_filter")

    def __init__(self, call: MeteredCall, headers: Mapping[str, str] | None = None) -> None:
        self._call = call
        self._accumulator = stream_accumulator(call.endpoint.wire, call.endpoint.api, headers=headers)
        self._filter = UsageChunkFilter() if call.hide_usage else None
        self._ended = threading.Lock()

    def feed(self, chunk: bytes) -> bytes:
        """Account for ``chunk`` and return what to pass on (the same bytes unless filtering)."""
        self._accumulator.feed(chunk)
        return chunk if self._filter is None else self._filter.feed(chunk)

    def flush(self) -> bytes:
        return b"" if self._filter is None else self._filter.flush()

    @property
    def ended(self) -> bool:
        return self._ended.locked()

    def end(self, error: BaseException | None = None) -> None:
        """The stream was read to the end, closed early (usage incomplete: recorded as a lower
        bound, never as zero) or broke with ``error``. Only the first call records."""
        if not self._ended.acquire(blocking=False):
            return
        metered = self._call.metered
        self._accumulator.close()
        try:
            usage = self._accumulator.usage()
        except InvalidUsage as exc:
            usage = Usage(complete=False, reason=f"unreadable usage in the stream ({exc})")
        if usage.complete and not self._accumulator.done and error is not None:
            usage = replace(usage, complete=False, reason="the stream broke before its end")
        if self._accumulator.model:
            metered.model = self._accumulator.model
        # The provider bills a stream it started, however it ended: record what it reported (an
        # incomplete count settles the estimate, never zero), as an error if the stream broke.
        metered.set_usage(usage)
        broke = error is not None or self._accumulator.provider_error is not None
        metered.finish("error" if broke else "ok")


_DUAL: dict[type[BaseException], type[BaseException]] = {}


def _from_anthropic_sdk(headers: Mapping[str, str]) -> bool:
    # The SDK always sends anthropic-version; its User-Agent ("Anthropic/Python ...") is often
    # replaced by the application's own (default_headers={"User-Agent": ...}).
    return "anthropic-version" in headers or "anthropic" in headers.get("user-agent", "").lower()


def for_sdk(error: OutlayError, headers: Mapping[str, str]) -> OutlayError:
    """``error`` as the SDK that sent a request with ``headers`` lets it through.

    The anthropic SDK wraps every exception from its HTTP client that is not an ``AnthropicError``
    in ``APIConnectionError`` and retries it. A refused budget must reach the caller as itself, at
    once; and an error recording a call the provider answered (the event log unavailable) must not
    make the SDK send -- and the provider bill -- the same call again. So for that SDK the error is
    re-raised as a subclass of both its outlay class and ``anthropic.AnthropicError``
    (``except outlay.BudgetExceeded`` still catches it). The openai SDK passes such errors through
    unchanged.
    """
    if not _from_anthropic_sdk(headers):
        return error
    try:
        from anthropic import AnthropicError
    except ImportError:
        return error
    cls = type(error)
    dual = _DUAL.get(cls)
    if dual is None:
        dual = _DUAL.setdefault(
            cls, type(cls.__name__, (cls, AnthropicError), {"__module__": cls.__module__})
        )
    twin: Any = BaseException.__new__(dual)
    twin.__dict__.update(error.__dict__)
    twin.args = error.args
    return twin  # type: ignore[no-any-return]
