"""Usage, model and id of a whole (non-streamed) response."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from outlay._usage import Usage

from ._anthropic import read_anthropic
from ._base import ParsedResponse
from ._common import check_headers, header_tier, load_body
from ._google import read_google
from ._openai import read_openai
from ._registry import _formats, normalize_api, normalize_provider

__all__ = ["parse_response", "usage_from_response"]

_READERS: dict[str, Callable[[dict[str, Any], str | None, object], ParsedResponse]] = {
    "openai": read_openai,
    "anthropic": read_anthropic,
    "google": read_google,
}


def parse_response(
    provider: str, body: object, api: str | None = None, *, headers: Mapping[str, str] | None = None
) -> ParsedResponse:
    """Usage, reported model and response id of one response.

    ``body`` is a dict, JSON text/bytes, or an official SDK response object. ``api`` picks the OpenAI
    API (``chat``, ``completions``, ``responses``, ``embeddings``; ``None`` detects it from the body's
    ``object``), ``messages`` for Anthropic, ``generate_content`` for Google. ``headers`` are the
    response's HTTP headers, if you have them: the Gemini API names the service tier that served a
    call only in ``x-gemini-service-tier`` (its own and its OpenAI-compatible endpoints), used when
    the body names none. Raises :class:`~outlay.InvalidUsage` naming the JSON path of whatever is
    missing or wrong.
    """
    fmt = _formats.get(provider)  # fast path for a canonical id
    if fmt is None:
        fmt = _formats[normalize_provider(provider)]
    if api is not None:
        normalize_api(fmt, api)
    header = None if headers is None else header_tier(check_headers(headers))
    return _READERS[fmt](body if type(body) is dict else load_body(body), api, header)


def usage_from_response(
    provider: str, body: object, api: str | None = None, *, headers: Mapping[str, str] | None = None
) -> Usage:
    """The normalised :class:`~outlay.Usage` of one response (see :func:`parse_response`)."""
    return parse_response(provider, body, api, headers=headers).usage
