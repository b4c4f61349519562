"""Usage extraction: one normalised :class:`~outlay.Usage` from every provider's responses and streams.

How each provider's fields map onto ``Usage`` is documented in its module (with links to the
provider's docs) and in ``docs/usage.md``.
"""

from __future__ import annotations

from ._base import CUT, ParsedResponse
from ._registry import declare_provider, normalize_provider, wire_format
from ._response import parse_response, usage_from_response
from ._stream import StreamAccumulator, stream_accumulator, usage_from_stream

__all__ = [
    "CUT",
    "ParsedResponse",
    "StreamAccumulator",
    "declare_provider",
    "normalize_provider",
    "parse_response",
    "stream_accumulator",
    "usage_from_response",
    "usage_from_stream",
    "wire_format",
]
