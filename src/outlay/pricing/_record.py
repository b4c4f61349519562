"""``PriceRecord``: one immutable, effective-dated set of prices for one provider/model.

A record never changes once built. A price change is a *new* record with a later
``effective_from`` (DESIGN invariant 4), so any past rating can be explained by naming the record
it used: :attr:`PriceRecord.version` is that name, e.g. ``genai-prices@0.2.3:openai/o3@2025-06-10``
or ``overrides@3f2a9c01b7de:self-hosted/llama-3.1-70b@2026-01-01``. A record of one service tier
ends with it: ``genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import Decimal
from types import MappingProxyType
from typing import Final

__all__ = [
    "COUNT_PRICE_KEYS",
    "OVERRIDE_PRICE_KEYS",
    "TOKEN_PRICE_KEYS",
    "PriceRecord",
    "Tier",
    "TieredPrice",
    "format_instant",
]

#: Usage kind -> genai-prices price key, priced per million tokens. ``cache_write`` is the parent
#: price of both TTLs: a TTL without its own price falls back to it (as genai-prices does).
TOKEN_PRICE_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "input": "input_mtok",
        "cache_read": "cache_read_mtok",
        "cache_write": "cache_write_mtok",
        "cache_write_5m": "cache_write_5m_mtok",
        "cache_write_1h": "cache_write_1h_mtok",
        "cache_audio_read": "cache_audio_read_mtok",
        "input_audio": "input_audio_mtok",
        "input_image": "input_image_mtok",
        "output": "output_mtok",
        "output_reasoning": "output_reasoning_mtok",
        "output_audio": "output_audio_mtok",
        "output_image": "output_image_mtok",
    }
)

#: Usage kind -> price key, priced per thousand (searches, requests).
COUNT_PRICE_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {"web_searches": "web_searches_kcount", "requests": "requests_kcount"}
)

#: Every price key an overrides file may set (plus ``units`` for custom units).
OVERRIDE_PRICE_KEYS: Final = frozenset(TOKEN_PRICE_KEYS.values()) | frozenset(COUNT_PRICE_KEYS.values())


@dataclass(frozen=True, slots=True)
class Tier:
    """From ``start`` total input tokens (exclusive) on, *all* tokens cost ``price``."""

    start: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class TieredPrice:
    """A price that changes with the request's total input tokens (the "cliff" model of genai-prices)."""

    base: Decimal
    tiers: tuple[Tier, ...]

    def for_input(self, input_tokens: int) -> Decimal:
        """The price that applies to a request with ``input_tokens`` total input tokens."""
        for tier in reversed(self.tiers):
            if input_tokens > tier.start:
                return tier.price
        return self.base


def format_instant(moment: datetime) -> str:
    """A date when ``moment`` is midnight UTC (the usual case), else an ISO UTC timestamp."""
    utc = moment.astimezone(UTC)
    if utc.time() == time(0, 0):
        return utc.date().isoformat()
    return utc.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """Prices of one provider/model from ``effective_from`` (inclusive) to ``effective_to`` (exclusive).

    ``prices`` holds genai-prices style keys in their published unit (``input_mtok`` per million
    tokens, ``web_searches_kcount`` per thousand); ``units`` holds custom units priced per *one*
    unit (a GPU-second, a tool call). ``None`` dates are open ended. For an override, ``model`` may
    be a glob (``claude-opus-*``). ``service_tier`` is set on the prices of one non-standard tier
    (``priority``, ``flex``, ``batch``): they rate only calls served at that tier.
    """

    provider: str
    model: str
    source: str
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    prices: Mapping[str, Decimal | TieredPrice] = field(default_factory=lambda: MappingProxyType({}))
    units: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    note: str | None = None
    service_tier: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))
        object.__setattr__(self, "units", MappingProxyType(dict(sorted(self.units.items()))))

    @property
    def version(self) -> str:
        """Stable id of this exact record: ``<source>:<provider>/<model>[@<effective_from>][#<tier>]``."""
        base = f"{self.source}:{self.provider}/{self.model}"
        if self.effective_from is not None:
            base = f"{base}@{format_instant(self.effective_from)}"
        return base if self.service_tier is None else f"{base}#{self.service_tier}"

    def in_force(self, at: datetime) -> bool:
        """Whether this record applies at ``at`` (an aware datetime)."""
        if self.effective_from is not None and at < self.effective_from:
            return False
        return self.effective_to is None or at < self.effective_to
