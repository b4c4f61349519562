"""Anthropic's Messages format.

- Usage: https://docs.anthropic.com/en/api/messages — ``input_tokens`` counts only the *uncached*
  input: cache reads (``cache_read_input_tokens``) and writes (``cache_creation_input_tokens``) are
  reported beside it, so outlay's ``input_tokens`` is the sum of the three. ``cache_creation``
  splits the writes by TTL (``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``), see
  https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#1-hour-cache-duration.
  ``server_tool_use.web_search_requests`` counts billed web searches; ``output_tokens`` includes
  thinking (``output_tokens_details.thinking_tokens`` is a part of it).
- Streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming — ``message_start``
  carries the input side; ``message_delta`` carries usage whose counts are **cumulative** ("the
  token counts in the usage field of the message_delta event are cumulative"): each field takes its
  latest value, never a sum. Newer API versions also repeat input and cache counts there, and a
  stream using server tools may send several ``message_delta`` events.
- ``usage.service_tier`` ("standard", "priority" or "batch") is the tier that served the request
  (https://docs.anthropic.com/en/api/service-tiers); in a stream it is in ``message_start``'s
  usage (and any ``message_delta`` repeating it: the latest wins, as for the counts).
"""

from __future__ import annotations

from typing import Any

from outlay._errors import InvalidUsage
from outlay._usage import Usage

from ._base import ParsedResponse, StreamState, cut_usage, describe_error
from ._common import count, nested, required, text, with_tier, within

__all__ = ["AnthropicStream", "anthropic_usage", "read_anthropic"]

_RELEVANT = (b'"message_start"', b'"message_delta"', b'"message_stop"', b'"error"')


def anthropic_usage(u: Any, at: str) -> Usage:
    if not isinstance(u, dict):
        raise InvalidUsage(f"must be an object, got {type(u).__name__}", field=at)
    uncached = required(u, "input_tokens", at)
    read = count(u, "cache_read_input_tokens", at)
    write = count(u, "cache_creation_input_tokens", at)
    one_hour = 0
    creation = nested(u, "cache_creation", at)
    if creation:
        where = at + ".cache_creation"
        one_hour = count(creation, "ephemeral_1h_input_tokens", where)
        five_minutes = count(creation, "ephemeral_5m_input_tokens", where)
        if u.get("cache_creation_input_tokens") is None:
            write = five_minutes + one_hour
        within(
            one_hour + five_minutes,
            where + ".ephemeral_*_input_tokens",
            write,
            at + ".cache_creation_input_tokens",
        )
    output = required(u, "output_tokens", at)
    reasoning = web = 0
    details = nested(u, "output_tokens_details", at)
    if details:
        reasoning = count(details, "thinking_tokens", at + ".output_tokens_details")
        within(reasoning, at + ".output_tokens_details.thinking_tokens", output, at + ".output_tokens")
    tools = nested(u, "server_tool_use", at)
    if tools:
        web = count(tools, "web_search_requests", at + ".server_tool_use")
    usage = Usage(
        input_tokens=uncached + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=one_hour,
        output_tokens=output,
        reasoning_tokens=reasoning,
        web_searches=web,
    )
    return with_tier(usage, u.get("service_tier"))


def read_anthropic(body: dict[str, Any], api: str | None, header: object = None) -> ParsedResponse:
    # ``header`` (Gemini's x-gemini-service-tier) is not Anthropic's: it names its tier in the body.
    raw = body.get("usage")
    if raw is None:
        kind = body.get("type")
        hint = f" (type={kind!r})" if kind != "message" else ""
        raise InvalidUsage(f"is missing: the body is not a Messages response with usage{hint}", field="usage")
    return ParsedResponse(anthropic_usage(raw, "usage"), text(body, "model"), text(body, "id"))


class AnthropicStream(StreamState):
    """``message_start`` + cumulative ``message_delta`` usage, complete at ``message_stop``."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[str, Any] = {}
        self._usage: Usage | None = None
        self._delta_seen = False

    def wants(self, data: bytes) -> bool:
        # content_block_* events are the bulk of a stream and never carry usage.
        return any(marker in data for marker in _RELEVANT)

    def on_event(self, event: dict[str, Any], label: str) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise InvalidUsage("must be an object", field=f"{label}.message")
            self.model, self.response_id = text(message, "model"), text(message, "id")
            usage = message.get("usage")
            if usage is None:
                raise InvalidUsage("is missing", field=f"{label}.message.usage")
            self._merge(usage, f"{label}.message.usage")
        elif kind == "message_delta":
            usage = event.get("usage")
            if usage is not None:
                self._merge(usage, f"{label}.usage")
                self._delta_seen = True
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.provider_error, self.done = describe_error(event.get("error")), True

    def _merge(self, usage: object, at: str) -> None:
        if not isinstance(usage, dict):
            raise InvalidUsage(f"must be an object, got {type(usage).__name__}", field=at)
        # Cumulative counts: the latest non-null value of each field replaces the earlier one.
        self._fields.update({key: value for key, value in usage.items() if value is not None})
        self._usage = anthropic_usage(self._fields, at)

    def usage(self) -> Usage:
        if self._usage is not None and self._delta_seen and self.done and self.provider_error is None:
            return self._usage
        if self.provider_error is not None:
            why = f"provider error in the stream: {self.provider_error}"
        elif self._usage is None:
            why = "no message_start was received"
        elif not self._delta_seen:
            why = "no message_delta was received; counts are message_start's"
        else:
            why = "no message_stop was received; counts are the latest message_delta's"
        return cut_usage(self._usage, why)
