"""Server-sent events passing through the gateway, event by event, never buffered whole.

When the gateway itself added ``stream_options.include_usage`` to a chat stream (so it can meter the
call), the upstream sends one extra chunk the client never asked for: ``"choices": []`` with the
usage. :class:`HiddenUsageFilter` removes exactly that chunk and forwards every other event as soon
as its terminating blank line has arrived (https://platform.openai.com/docs/api-reference/chat/streaming).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import Dialect, GatewayError, render

__all__ = ["HiddenUsageFilter", "error_event", "split_done"]

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_DONE = re.compile(rb"(?:^|(?<=\n))data: ?\[DONE\]\r?(?:\n|\Z)")


def _is_usage_only(event: bytes) -> bool:
    if b'"choices":[]' not in event and b'"choices": []' not in event:
        return False  # fast path: every content chunk has a non-empty choices list
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                data: Any = json.loads(line[5:])
            except ValueError:
                return False
            return (
                isinstance(data, dict) and data.get("choices") == [] and isinstance(data.get("usage"), dict)
            )
    return False


class HiddenUsageFilter:
    """Feed upstream bytes, get back the bytes to forward: whole events only (an upstream cut
    mid-event leaves no half event before the gateway's error event), minus the usage-only one
    when ``hide`` (the gateway added ``include_usage`` itself)."""

    def __init__(self, *, hide: bool = True) -> None:
        # The unfinished event, appended to in place, and how far it has been searched for its end:
        # an event of megabytes (a Responses ``response.completed`` repeats the whole output) that
        # arrives in thousands of reads costs time proportional to its size, not to its square.
        self._buffer = bytearray()
        self._searched = 0
        self._hide = hide
        self.hidden = 0

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer
        # An event end is at most 4 bytes (\r\n\r\n): one may straddle the old bytes and the new.
        begin = max(0, self._searched - 3)
        buffer += chunk
        out: list[bytes] = []
        start = 0
        while (match := _EVENT_END.search(buffer, max(start, begin))) is not None:
            event = bytes(buffer[start : match.end()])
            start = match.end()
            if self._hide and _is_usage_only(event):
                self.hidden += 1
            else:
                out.append(event)
        if start:
            del buffer[:start]
        self._searched = len(buffer)
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (an unterminated last event is still forwarded)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._searched = 0
        return b"" if self._hide and _is_usage_only(rest) else rest


def split_done(events: bytes, held: bytes = b"") -> tuple[bytes, bytes]:
    """What of ``events`` to send now, and what to hold until the call is recorded: OpenAI's closing
    ``data: [DONE]`` and whatever follows it (``held``: what is held already, which everything
    after it joins, in order). The gateway sends it only once the call is recorded, since an SDK
    reads nothing after it."""
    if held:
        return b"", held + events
    if b"[DONE]" not in events:  # every chunk but the last: no regex search on the hot path
        return events, b""
    match = _DONE.search(events)
    if match is None:
        return events, b""
    return events[: match.start()], events[match.start() :]


def error_event(error: GatewayError, dialect: Dialect) -> bytes:
    """An in-stream error, once the 200 status line has gone: Anthropic's documented ``event: error``;
    for OpenAI a ``data:`` line carrying ``{"error": ...}``, which the openai SDK raises as APIError."""
    body = render(error, dialect)
    if dialect == "anthropic":
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"
