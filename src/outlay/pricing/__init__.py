"""Versioned prices and exact rating.

Prices come from the pinned ``genai-prices`` package (never fetched at run time) plus the user's
effective-dated overrides and custom units (see docs/pricing.md)::

    import outlay.pricing as pricing
    rating = pricing.rate(usage, provider="openai", model="gpt-4o", at=when)
    rating.cost, rating.breakdown, rating.price_version
"""

from __future__ import annotations

from ._catalog import PriceCatalog, default_catalog, estimate, rate
from ._overrides import Overrides, load_overrides, parse_overrides
from ._record import PriceRecord, Tier, TieredPrice

__all__ = [
    "Overrides",
    "PriceCatalog",
    "PriceRecord",
    "Tier",
    "TieredPrice",
    "default_catalog",
    "estimate",
    "load_overrides",
    "parse_overrides",
    "rate",
]
