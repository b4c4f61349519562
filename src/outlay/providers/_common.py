"""Helpers shared by the provider readers: body loading and count validation that names JSON paths.

The count readers are on the per-call metering path, so the happy path is a dict lookup and a type
check; the JSON path of a field is only built when a value is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

import orjson

from outlay._errors import InvalidUsage
from outlay._usage import STANDARD_TIERS, TIER_NAME, Usage

__all__ = [
    "bad_count",
    "check_headers",
    "count",
    "gemini_tier",
    "header_tier",
    "json_object",
    "load_body",
    "nested",
    "required",
    "served_tier",
    "text",
    "with_tier",
    "within",
]

_TEXT = (bytes, bytearray, memoryview, str)


def bad_count(path: str, value: object) -> InvalidUsage:
    return InvalidUsage(f"must be a non-negative integer, got {value!r}", field=path)


def count(obj: Mapping[str, Any], key: str, at: str) -> int:
    """An optional count: absent or ``null`` is zero (providers omit zero fields), else a JSON int >= 0."""
    value = obj.get(key)
    # ``type() is int`` rejects bool (an int subclass) and float in one check.
    if type(value) is int and value >= 0:
        return value
    if value is None:
        return 0
    raise bad_count(f"{at}.{key}", value)


def required(obj: Mapping[str, Any], key: str, at: str) -> int:
    """A count the provider always reports: missing is an error, never read as zero."""
    value = obj.get(key)
    if type(value) is int and value >= 0:
        return value
    if value is None:
        raise InvalidUsage("is missing (the provider always reports it)", field=f"{at}.{key}")
    raise bad_count(f"{at}.{key}", value)


def nested(obj: Mapping[str, Any], key: str, at: str) -> Mapping[str, Any] | None:
    """An optional nested object (``null`` or absent is ``None``)."""
    value = obj.get(key)
    if value is None or type(value) is dict or isinstance(value, Mapping):
        return value
    raise InvalidUsage(f"must be an object, got {type(value).__name__}", field=f"{at}.{key}")


def within(part: int, part_path: str, whole: int, whole_path: str) -> None:
    """A part (cached, reasoning, audio...) can never exceed the total the provider says it is inside."""
    if part > whole:
        raise InvalidUsage(f"{part} exceeds {whole_path}={whole} (it is counted inside it)", field=part_path)


def text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if type(value) is str else None


_LONGEST_TIER: Final = 32


def served_tier(value: object) -> str | None:
    """The non-standard service tier a provider says served a call, as ``Usage`` names it.

    Never raises: the call was billed whatever this field holds, and its usage must be recorded. A
    value that is not a plain tier name (not a string, too long, odd characters) is ignored — the
    call is rated as standard — like a field the provider did not send (docs/pricing.md).
    """
    if type(value) is not str or len(value) > _LONGEST_TIER:
        return None
    tier = value.strip().lower()
    if tier in STANDARD_TIERS or not TIER_NAME.match(tier):
        return None
    return tier


def with_tier(usage: Usage, value: object) -> Usage:
    """``usage`` served at the tier ``value`` names (see :func:`served_tier`)."""
    if value is None or value == "default":  # the usual case: no copy
        return usage
    tier = served_tier(value)
    return usage if tier is None else replace(usage, service_tier=tier)


#: The response header in which the Gemini API names the tier that served a call:
#: https://ai.google.dev/gemini-api/docs/priority-inference ("standard" when a priority request was
#: served at standard, as it may be when priority capacity runs out).
GEMINI_TIER_HEADER: Final = "x-gemini-service-tier"


def gemini_tier(value: object) -> object:
    """Gemini's name of a tier as :func:`with_tier` takes it: its REST enum is ``standard``,
    ``flex``, ``priority`` or ``unspecified`` (the default, standard), spelt ``SERVICE_TIER_PRIORITY``
    in its proto form. Anything else is passed on as it is, for :func:`served_tier` to judge."""
    if type(value) is not str or len(value) > _LONGEST_TIER + 13:
        return value
    name = value.strip().lower().removeprefix("service_tier_")
    return "standard" if name == "unspecified" else name


def header_tier(headers: Mapping[str, str] | None) -> object:
    """The tier a response's ``x-gemini-service-tier`` header names, or ``None`` when it has none.

    ``headers`` is any mapping of the response's headers: httpx's and starlette's are
    case-insensitive; a plain dict is searched whatever the case of its keys. Never raises: a
    value that is no tier name is judged (and ignored) by :func:`with_tier`.
    """
    if not headers:
        return None
    value = headers.get(GEMINI_TIER_HEADER)
    if value is None and type(headers) is dict:
        value = next((v for k, v in headers.items() if str(k).lower() == GEMINI_TIER_HEADER), None)
    return None if value is None else gemini_tier(value)


def check_headers(headers: object) -> Mapping[str, str] | None:
    """``headers`` given to a reader: ``None`` or a mapping (InvalidUsage names the field)."""
    if headers is None or isinstance(headers, Mapping):
        return headers
    raise InvalidUsage(
        f"expected a mapping of response header names to values, got {type(headers).__name__}",
        field="headers",
    )


def json_object(data: bytes | bytearray | memoryview | str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsage(f"invalid JSON: {exc}", field=what) from None
    if type(value) is not dict:
        raise InvalidUsage(f"expected a JSON object, got {type(value).__name__}", field=what)
    return value


def sdk_dump(obj: object) -> dict[str, Any] | None:
    """``model_dump()`` of an official SDK object (openai, anthropic, google-genai are all pydantic)."""
    dump = getattr(obj, "model_dump", None)
    if not callable(dump):
        return None
    # by_alias: wire names (google-genai's models are snake_case with camelCase aliases);
    # mode="json": enums (Gemini modalities) become their wire strings.
    value = dump(mode="json", by_alias=True, warnings=False)
    return value if isinstance(value, dict) else None


def load_body(body: object, what: str = "body") -> dict[str, Any]:
    """A response body as a dict: a dict, JSON text/bytes, or an SDK response object."""
    if type(body) is dict:
        return body
    if isinstance(body, _TEXT):
        return json_object(body, what)
    if isinstance(body, Mapping):
        return dict(body)
    dumped = sdk_dump(body)
    if dumped is not None:
        return dumped
    raise InvalidUsage(
        f"expected a dict, JSON text/bytes or an SDK response object, got {type(body).__name__}",
        field=what,
    )
