"""Usage of what passed through the gateway, read with ``outlay.providers``.

``wire`` names the *wire format* (``"openai"`` or ``"anthropic"``: Gemini's compatibility endpoint and
self-hosted servers speak OpenAI's). Whatever cannot be read becomes usage flagged incomplete with
the reason — never an exception on the answer path, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Mapping

from outlay._errors import InvalidUsage
from outlay._usage import Usage
from outlay.providers import StreamAccumulator, parse_response, stream_accumulator

__all__ = ["StreamAccumulator", "read_response", "read_stream", "stream_accumulator"]


def read_response(
    wire: str, body: bytes, api: str, headers: Mapping[str, str] | None = None
) -> tuple[Usage, str | None, str | None]:
    """``(usage, model, response id)`` of a whole 2xx answer; ``headers`` are the upstream's (the
    Gemini API names the service tier that served a call only in one of them).

    A 2xx with no readable usage is a call the provider billed for an amount we cannot see: it
    comes back as an empty usage with ``complete=False`` and the reason, to be billed as an estimate.
    """
    try:
        parsed = parse_response(wire, body, api, headers=headers)
    except InvalidUsage as exc:
        return Usage(complete=False, reason=f"the response carried no readable usage ({exc})"), None, None
    return parsed.usage, parsed.model, parsed.response_id


def read_stream(accumulator: StreamAccumulator) -> Usage:
    """The usage a finished (or cut) stream reported; incomplete, with a reason, when it is partial."""
    accumulator.close()
    try:
        return accumulator.usage()
    except InvalidUsage as exc:
        return Usage(complete=False, reason=f"the stream's usage could not be read ({exc})")
