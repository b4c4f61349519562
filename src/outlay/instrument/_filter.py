"""Hide the usage-only chunk of an OpenAI chat stream that outlay itself asked for.

With ``stream_options.include_usage`` the upstream ends the stream with one extra chunk whose
``choices`` is empty and which carries the usage
(https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options). When the
caller did not ask for it, outlay adds the option to meter the call and removes that chunk again, so
the caller sees exactly the stream it asked for. Every other event is forwarded as soon as its
closing blank line arrives; only an unfinished event is held back.
"""

from __future__ import annotations

import re
from typing import Final

import orjson

__all__ = ["UsageChunkFilter"]

_EVENT_END: Final = re.compile(rb"\r?\n\r?\n")


def _is_usage_only(event: bytes) -> bool:
    if b'"choices":[]' not in event and b'"choices": []' not in event:
        return False  # fast path: every content chunk has a non-empty choices list
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            return (
                isinstance(data, dict) and data.get("choices") == [] and isinstance(data.get("usage"), dict)
            )
    return False


class UsageChunkFilter:
    """Feed upstream bytes, get back the bytes to pass on (whole events, minus the usage-only one)."""

    __slots__ = ("_buffer", "hidden")

    def __init__(self) -> None:
        self._buffer = b""
        self.hidden = 0

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while (match := _EVENT_END.search(buffer, start)) is not None:
            event = buffer[start : match.end()]
            start = match.end()
            if _is_usage_only(event):
                self.hidden += 1
            else:
                out.append(event)
        self._buffer = buffer[start:]
        return b"".join(out)

    def flush(self) -> bytes:
        """What is left when the stream ends (an unterminated last event is still passed on)."""
        rest, self._buffer = self._buffer, b""
        return b"" if _is_usage_only(rest) else rest
