"""``Usage``: what one billable operation consumed, in one normalised shape for every provider.

Token semantics are the same whatever the provider reported (each provider module documents how it
maps onto these):

- ``input_tokens`` is **all** input tokens, cached ones included. Anthropic reports uncached input
  separately from cache reads and writes; its extractor adds them up so this field means the same
  thing everywhere. ``cache_read_tokens`` and ``cache_write_tokens`` are *parts* of it.
- ``cache_write_tokens`` is every cache write; ``cache_write_1h_tokens`` is the part written with the
  one-hour TTL (the rest is the default five-minute TTL).
- ``output_tokens`` is **all** output tokens, reasoning included; ``reasoning_tokens`` is a part.
  (Gemini reports thoughts beside the candidates; its extractor adds them into output.)
- ``*_audio_tokens`` / ``*_image_tokens`` are parts of input or output in that modality.
- ``web_searches`` counts provider-side searches the provider reported.
- ``units`` holds any other billable quantity by name (``requests``, ``gpu_seconds``,
  ``vector_queries``, ``tool_calls``, ...), priced by the catalog's custom units.
- ``complete`` is ``False`` when the numbers are known to be a lower bound — a stream cut before the
  provider sent its usage. Such usage is never mistaken for zero: ``reason`` says what happened.
- ``service_tier`` is the tier the provider says served the call when it is not the standard one
  (``"priority"``, ``"flex"``, ``"batch"``, ...); ``None`` is standard. Rating charges the tier's
  price (docs/pricing.md, "Service tiers"); the standard names (``standard``, ``default``,
  ``auto``) are stored as ``None``, so a standard call's usage is the same whoever reported it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from ._errors import InvalidUsage
from ._frozen import slot_init

__all__ = ["CACHE_AUDIO_READ_UNIT", "MAX_COUNT", "STANDARD_TIERS", "TOKEN_FIELDS", "Usage", "asked_tier"]

#: The largest count one operation may report (a trillion tokens; the largest contexts hold a few
#: million). Ledgers sum counts in 64-bit integers: millions of events at this bound still fit,
#: where one count near 2^63 would make every total it joins overflow.
MAX_COUNT: Final = 10**12

_NO_UNITS: Mapping[str, Decimal] = MappingProxyType({})
#: The unit (genai-prices' usage key) that counts the audio tokens among ``cache_read_tokens``: a
#: *part* of the cache reads, not an extra quantity. Rating charges them at the model's
#: ``cache_audio_read_mtok`` where it has one (Gemini bills cached audio above cached text), else
#: leaves them in the cache reads.
CACHE_AUDIO_READ_UNIT: Final = "cache_audio_read_tokens"

UNIT_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")

#: What a service tier may be called: short and plain, as every provider names them. It is stored
#: on every event and named in ``price_version``, so it is bounded like any other name.
TIER_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: The names providers give the standard tier (OpenAI ``default``/``auto``, Anthropic and Gemini
#: ``standard``): a call served at one of them is rated at the standard price, as ``None`` is.
STANDARD_TIERS: Final = frozenset({"standard", "default", "auto"})

#: The integer token/count fields of :class:`Usage`, in a stable order.
TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "output_image_tokens",
    "web_searches",
)

# (part, whole): a part can never exceed the total it belongs to.
_PARTS = (
    ("cache_read_tokens", "input_tokens"),
    ("cache_write_tokens", "input_tokens"),
    ("cache_write_1h_tokens", "cache_write_tokens"),
    ("input_audio_tokens", "input_tokens"),
    ("input_image_tokens", "input_tokens"),
    ("reasoning_tokens", "output_tokens"),
    ("output_audio_tokens", "output_tokens"),
    ("output_image_tokens", "output_tokens"),
)


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsage(f"must be a non-negative integer, got {value!r}", field=name)
    if value < 0:
        raise InvalidUsage(f"must not be negative, got {value}", field=name)
    if value > MAX_COUNT:
        raise InvalidUsage(f"must be at most 10^12 for one operation, got {value}", field=name)
    return value


def asked_tier(value: object) -> str | None:
    """The non-standard service tier a request body's ``service_tier`` asks for (OpenAI's and
    Anthropic's top-level field), so that its hold is at that tier's price; anything else (absent,
    a standard name, not a plain name) is None: the provider judges the request, and admission
    never fails on it."""
    if type(value) is not str or len(value) > 32:
        return None
    tier = value.strip().lower()
    return None if tier in STANDARD_TIERS or not TIER_NAME.match(tier) else tier


def _check_tier(value: object) -> str | None:
    if type(value) is not str:
        raise InvalidUsage(
            f"must be a string naming the tier, got {type(value).__name__}", field="service_tier"
        )
    tier = value.strip().lower()
    if not TIER_NAME.match(tier):
        shown = value if len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
        raise InvalidUsage(
            f"must be a tier name such as 'priority' ({TIER_NAME.pattern}), got {shown!r}",
            field="service_tier",
        )
    return None if tier in STANDARD_TIERS else tier


def _check_quantity(name: str, value: object) -> Decimal:
    if isinstance(value, bool | float):
        raise InvalidUsage(f"must be an int, Decimal or decimal string, got {value!r}", field=f"units.{name}")
    if isinstance(value, str) and (not value.isascii() or "_" in value):
        # Decimal() also reads "3_000" and other scripts' digits ("٣"): not a plain quantity
        raise InvalidUsage(f"not a plain decimal quantity: {value!r}", field=f"units.{name}")
    try:
        amount = Decimal(value) if isinstance(value, int | str) else value
    except ArithmeticError:
        raise InvalidUsage(f"not a decimal quantity: {value!r}", field=f"units.{name}") from None
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise InvalidUsage(f"must be a finite non-negative quantity, got {value!r}", field=f"units.{name}")
    return amount


@slot_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised usage of one operation. See the module docstring for exact semantics."""

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0
    web_searches: int = 0
    units: Mapping[str, Decimal] = field(default_factory=lambda: _NO_UNITS)
    complete: bool = True
    reason: str | None = None
    service_tier: str | None = None

    def __post_init__(self) -> None:
        # This runs on every metered call, so the common case (plain ints, no units) is kept to one
        # pass over the values; the slow, field-naming checks run only when something is off.
        values = (
            self.input_tokens, self.cache_read_tokens, self.cache_write_tokens, self.cache_write_1h_tokens,
            self.output_tokens, self.reasoning_tokens, self.input_audio_tokens, self.output_audio_tokens,
            self.input_image_tokens, self.output_image_tokens, self.web_searches,
        )  # fmt: skip
        try:  # in C: no Python-level loop over the eleven counts
            plain = min(values) >= 0 and max(values) <= MAX_COUNT and set(map(type, values)) == _INT_ONLY
        except TypeError:  # a count that is not a number at all
            plain = False
        if not plain:
            for name in TOKEN_FIELDS:
                _check_count(name, getattr(self, name))
        if (
            self.cache_read_tokens + self.cache_write_tokens > self.input_tokens
            or self.input_audio_tokens + self.input_image_tokens > self.input_tokens
            or self.reasoning_tokens > self.output_tokens
            or self.output_audio_tokens + self.output_image_tokens > self.output_tokens
            or self.cache_write_1h_tokens > self.cache_write_tokens
        ):
            for part, whole in _PARTS:
                if getattr(self, part) > getattr(self, whole):
                    raise InvalidUsage(
                        f"{part}={getattr(self, part)} exceeds {whole}={getattr(self, whole)}"
                        f" ({part} is counted inside {whole})",
                        field=part,
                    )
        if type(self.complete) is not bool:
            raise InvalidUsage(f"must be a bool, got {self.complete!r}", field="complete")
        if self.service_tier is not None:
            object.__setattr__(self, "service_tier", _check_tier(self.service_tier))
        if self.units is _NO_UNITS:
            return
        if not isinstance(self.units, Mapping):
            raise InvalidUsage("must be a mapping of unit name to quantity", field="units")
        units: dict[str, Decimal] = {}
        for name, quantity in self.units.items():
            if not isinstance(name, str) or not UNIT_NAME.match(name):
                raise InvalidUsage(
                    f"unit name {name!r} must match {UNIT_NAME.pattern} (lower case, digits, _ . : -)",
                    field="units",
                )
            amount = _check_quantity(name, quantity)
            if amount:
                units[name] = amount
        object.__setattr__(
            self, "units", MappingProxyType(dict(sorted(units.items()))) if units else _NO_UNITS
        )

    # -- derived parts, used by rating ------------------------------------------------------------

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens neither read from nor written to a cache."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes at the default (five-minute) TTL."""
        return self.cache_write_tokens - self.cache_write_1h_tokens

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in TOKEN_FIELDS) and not self.units

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        units = dict(self.units)
        for name, quantity in other.units.items():
            units[name] = units.get(name, Decimal(0)) + quantity
        if self.service_tier != other.service_tier:
            # One rating prices one tier: a sum across tiers would be charged wrongly either way.
            raise InvalidUsage(
                f"cannot add usage served at service tier {self.service_tier or 'standard'!r} to usage"
                f" served at {other.service_tier or 'standard'!r}; rate them apart",
                field="service_tier",
            )
        reasons = [r for r in (self.reason, other.reason) if r]
        return Usage(
            **{name: getattr(self, name) + getattr(other, name) for name in TOKEN_FIELDS},
            units=units,
            complete=self.complete and other.complete,
            reason="; ".join(reasons) or None,
            service_tier=self.service_tier,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: only non-zero counts, unit quantities as decimal strings."""
        out: dict[str, Any] = {name: getattr(self, name) for name in TOKEN_FIELDS if getattr(self, name)}
        if self.units:
            out["units"] = {name: str(q) for name, q in self.units.items()}
        if not self.complete:
            out["complete"] = False
        if self.reason:
            out["reason"] = self.reason
        if self.service_tier is not None:
            out["service_tier"] = self.service_tier
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        if type(data) is not dict and not isinstance(data, Mapping):
            raise InvalidUsage(f"expected an object, got {type(data).__name__}", field="usage")
        if _TOKEN_SET.issuperset(data):  # the usual case (counts only): no copy, checks in __post_init__
            return cls(**data)
        if not _FIELD_NAMES.issuperset(data):
            unknown = sorted(map(str, set(data) - _FIELD_NAMES))
            raise InvalidUsage(f"unknown usage field(s): {', '.join(unknown)}", field="usage")
        units = data.get("units") or {}
        if not isinstance(units, Mapping):
            raise InvalidUsage("must be an object", field="usage.units")
        return cls(
            **{name: value for name, value in data.items() if name in _TOKEN_SET},
            units={str(k): _check_quantity(str(k), v) for k, v in units.items()} if units else _NO_UNITS,
            complete=data.get("complete", True),
            reason=data.get("reason"),
            service_tier=data.get("service_tier"),
        )


_FIELD_NAMES: Final = frozenset(f.name for f in fields(Usage))
_TOKEN_SET: Final = frozenset(TOKEN_FIELDS)
_INT_ONLY: Final = {int}
