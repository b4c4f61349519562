"""``Rating``: the priced result of one usage — exact cost, how it was computed, or why it could not be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

__all__ = ["Rating"]


def _frozen(mapping: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Rating:
    """The cost of one usage under one price version.

    ``cost`` is ``None`` when ``priced`` is false: an unknown price is never a zero cost. In that case
    ``reason`` says what was missing, and ``breakdown`` still holds the parts that *could* be priced.
    ``breakdown`` maps a usage kind (``input``, ``cache_read``, ``cache_write_5m``, ``cache_write_1h``,
    ``output``, ``web_searches``, ``unit:<name>``, ...) to its exact cost, and ``unit_prices`` maps the
    same kinds to the USD price of *one* unit (one token, one search, one GPU-second) that was used.
    ``price_version`` identifies the exact price record(s) used, stable across runs.
    """

    cost: Decimal | None
    priced: bool
    price_version: str
    reason: str | None = None
    breakdown: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    unit_prices: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    currency: str = "USD"
    provider: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.priced and self.cost is None:
            raise ValueError("a priced rating needs a cost")
        if not self.priced and self.cost is not None:
            raise ValueError("an unpriced rating has no cost (unknown is not zero)")
        if not self.priced and not self.reason:
            raise ValueError("an unpriced rating needs a reason")
        object.__setattr__(self, "breakdown", _frozen(self.breakdown))
        object.__setattr__(self, "unit_prices", _frozen(self.unit_prices))
