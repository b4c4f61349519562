"""An incremental server-sent-events decoder that holds only the current, unfinished line.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation: lines
end with LF or CRLF (a lone CR is not used by any LLM provider and is not supported), ``:`` starts a
comment, ``data:`` lines of one event are joined with LF, a blank line ends the event.

Work per :meth:`SSEDecoder.feed` is proportional to the chunk: new bytes are scanned once for LF and a
line split across chunks is joined once, when its end arrives. An event's single ``data:`` line is
offered as soon as the line is complete (providers send one JSON object per line), so usage is read
even if the stream is cut before the event's closing blank line.
"""

from __future__ import annotations

from collections.abc import Callable

from outlay._errors import InvalidUsage

__all__ = ["MAX_LINE", "SSEDecoder"]

#: A single line longer than this is refused (a Responses ``response.completed`` event repeats the
#: whole output, so real lines can reach megabytes; this bounds memory against a runaway stream).
MAX_LINE = 64 * 1024 * 1024


class SSEDecoder:
    """Feed raw bytes; ``on_data(payload, final)`` receives each event's ``data`` bytes.

    It is offered an event's first data line with ``final=False`` and returns whether it took it;
    if not, it gets the whole joined payload with ``final=True`` when the event ends.
    """

    __slots__ = ("_data", "_on_data", "_partial", "_partial_len", "_sent")

    def __init__(self, on_data: Callable[[bytes, bool], bool]) -> None:
        self._on_data = on_data
        self._partial: list[bytes] = []  # pieces of the current line, not yet ended
        self._partial_len = 0
        self._data: list[bytes] = []  # data lines of the current event
        self._sent = False  # the current event's data was already handed on

    def feed(self, chunk: bytes) -> None:
        *lines, rest = chunk.split(b"\n")  # one C-level pass over the new bytes
        if lines:
            if self._partial:
                self._partial.append(lines[0])
                lines[0] = b"".join(self._partial)
                self._partial.clear()
                self._partial_len = 0
            handle = self._line
            for line in lines:
                handle(line[:-1] if line[-1:] == b"\r" else line)
        if rest:
            self._partial_len += len(rest)
            if self._partial_len > MAX_LINE:
                self._partial.clear()
                self._partial_len = 0
                raise InvalidUsage(f"an SSE line is longer than {MAX_LINE} bytes", field="stream")
            self._partial.append(rest)

    def close(self) -> None:
        """End of stream: an unterminated last line and an event without its blank line still count."""
        if self._partial:
            line = b"".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
            self._line(line[:-1] if line.endswith(b"\r") else line)
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data and not self._sent:
                self._on_data(b"\n".join(self._data), True)
            self._data.clear()
            self._sent = False
            return
        if line[:5] != b"data:":
            return  # comments, event:, id:, retry: say nothing about usage
        if self._sent:
            return  # more data after a whole payload: the joined payload could not decode anyway
        value = line[6:] if line[5:6] == b" " else line[5:]
        if self._data:
            self._data.append(value)
            return
        # Providers send one JSON object per data line: offer it now. The owner declines a line that
        # cannot be a whole payload, and gets the joined lines at the blank line instead.
        self._sent = self._on_data(value, False)
        if not self._sent:
            self._data.append(value)
