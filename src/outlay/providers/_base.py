"""What every provider reader returns: :class:`ParsedResponse` and a :class:`StreamState`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from outlay._usage import Usage

__all__ = ["CUT", "ParsedResponse", "StreamState", "cut_usage", "describe_error"]

#: Start of ``Usage.reason`` when a stream ended before the provider reported its final usage.
CUT = "stream ended before usage was reported"


class ParsedResponse(NamedTuple):
    """Usage, model and id of one response. ``model`` is the one the provider reports serving — the
    one to price, which may be a dated snapshot of the alias the caller asked for. A named tuple, so
    ``usage, model, response_id = parse_response(...)`` works too."""

    usage: Usage
    model: str | None
    response_id: str | None


def cut_usage(partial: Usage | None, why: str) -> Usage:
    """Usage known to be a lower bound: ``complete=False`` and a reason, never a silent zero."""
    return replace(partial or Usage(), complete=False, reason=f"{CUT} ({why})")


def describe_error(error: object) -> str:
    """A short description of a provider's in-stream error object, for ``Usage.reason``."""
    if isinstance(error, dict):
        parts = [error.get(key) for key in ("type", "code", "status", "message")]
        return ": ".join(str(part) for part in parts if part and part != "error") or "error"
    return repr(error)[:200]


class StreamState:
    """One provider's reading of one stream, fed event by event (already-decoded JSON objects).

    Implementations keep O(1) state — the latest raw usage and a few ids — and validate lazily in
    :meth:`usage`, so feeding never raises on the provider's bytes mid-stream.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.done = False
        self.provider_error: str | None = None  # an error the provider sent in the stream itself
        self.service_tier: object = None  # the tier the provider says served it, as sent (latest wins)

    def wants(self, data: bytes) -> bool:
        """Cheap pre-filter on an event's raw ``data:`` bytes: can it matter for usage or model?"""
        return True

    def on_event(self, event: dict[str, Any], label: str) -> None:
        raise NotImplementedError

    def on_done_marker(self) -> None:
        """OpenAI's ``data: [DONE]`` sentinel."""
        self.done = True

    def usage(self) -> Usage:
        raise NotImplementedError
