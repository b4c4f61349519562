"""Usage extraction for the gateway: ``outlay.providers`` when installed, else a minimal reader.

The gateway only needs two calls — ``stream_accumulator(provider, api)`` (``.feed(bytes)``,
``.usage()``, ``.model``) and ``parse_response(provider, body, api) -> (usage, model, response_id)``
— with ``provider`` naming the *wire format* (``"openai"`` or ``"anthropic"``: Gemini's compatibility
endpoint and self-hosted servers speak OpenAI's). ``outlay.providers`` owns the full extraction
(every token kind, every provider); the fallback here reads the same documented usage fields so the
gateway meters correctly even when that package is absent.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, cast

from outlay._usage import Usage

__all__ = ["StreamAccumulator", "parse_response", "stream_accumulator"]


class StreamAccumulator(Protocol):
    model: str | None

    def feed(self, chunk: bytes) -> None: ...

    def usage(self) -> Usage | None: ...


ParseResponse = Callable[[str, bytes, str], tuple[Usage | None, str | None, str | None]]


def _int(mapping: Mapping[str, Any] | None, key: str) -> int:
    value = (mapping or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_from(provider: str, api: str, raw: Mapping[str, Any]) -> Usage:
    """Normalise one provider usage object (see :mod:`outlay._usage` for the semantics)."""
    if provider == "anthropic":
        read, write = _int(raw, "cache_read_input_tokens"), _int(raw, "cache_creation_input_tokens")
        one_hour = _int(_dict(raw.get("cache_creation")), "ephemeral_1h_input_tokens")
        return Usage(
            input_tokens=_int(raw, "input_tokens") + read + write,  # Anthropic reports uncached input
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=min(one_hour, write),
            output_tokens=_int(raw, "output_tokens"),
        )
    if api == "responses":
        output = _int(raw, "output_tokens")
        return Usage(
            input_tokens=_int(raw, "input_tokens"),
            cache_read_tokens=_int(_dict(raw.get("input_tokens_details")), "cached_tokens"),
            output_tokens=output,
            reasoning_tokens=min(output, _int(_dict(raw.get("output_tokens_details")), "reasoning_tokens")),
        )
    output = _int(raw, "completion_tokens")
    prompt = _int(raw, "prompt_tokens")
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=min(prompt, _int(_dict(raw.get("prompt_tokens_details")), "cached_tokens")),
        output_tokens=output,
        reasoning_tokens=min(output, _int(_dict(raw.get("completion_tokens_details")), "reasoning_tokens")),
    )


def _fallback_parse(provider: str, body: bytes, api: str) -> tuple[Usage | None, str | None, str | None]:
    try:
        data = json.loads(body)
    except ValueError:
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    raw = data.get("usage")
    usage = usage_from(provider, api, raw) if isinstance(raw, dict) else None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    rid = data.get("id") if isinstance(data.get("id"), str) else None
    return usage, model, rid


class _FallbackAccumulator:
    """Reads usage from SSE events as they pass: OpenAI's final chunk, ``response.completed``, or
    Anthropic's ``message_start`` + cumulative ``message_delta``."""

    def __init__(self, provider: str, api: str) -> None:
        self.provider, self.api = provider, api
        self.model: str | None = None
        self._buffer = b""
        self._raw: dict[str, Any] | None = None
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if data == b"[DONE]" or not data:
            self._finished = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if (
            kind in ("response.created", "response.completed", "response.incomplete")
            or kind == "message_start"
        ):
            inner = _dict(event.get("response") or event.get("message"))
            self.model = inner.get("model") or self.model
            if isinstance(inner.get("usage"), dict):
                self._raw = {**(self._raw or {}), **inner["usage"]}
            if kind in ("response.completed", "response.incomplete"):
                self._finished = True
        elif kind == "message_delta" and isinstance(event.get("usage"), dict):
            # message_delta counts are cumulative: they replace, never add to, what came before.
            self._raw = {**(self._raw or {}), **event["usage"]}
        elif kind == "message_stop":
            self._finished = True
        elif kind is None:
            if isinstance(event.get("model"), str):
                self.model = event["model"]
            if isinstance(event.get("usage"), dict):
                self._raw = event["usage"]

    def usage(self) -> Usage | None:
        if self._raw is None:
            return None
        usage = usage_from(self.provider, self.api, self._raw)
        if self.provider == "anthropic" and not self._finished:
            return replace(usage, complete=False, reason="stream ended before message_stop")
        return usage


def _load() -> tuple[Callable[[str, str], StreamAccumulator], ParseResponse]:
    try:
        providers = importlib.import_module("outlay.providers")
    except ImportError:
        return _FallbackAccumulator, _fallback_parse
    accumulate = getattr(providers, "stream_accumulator", None)
    parse = getattr(providers, "parse_response", None)
    if callable(accumulate) and callable(parse):
        return cast(Callable[[str, str], StreamAccumulator], accumulate), cast(ParseResponse, parse)
    return _FallbackAccumulator, _fallback_parse


stream_accumulator, parse_response = _load()
