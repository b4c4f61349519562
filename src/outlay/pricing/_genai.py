"""Read the pinned ``genai-prices`` data as outlay :class:`PriceRecord` histories.

Only the data bundled with the installed (pinned) package is read: outlay builds its own
``DataSnapshot`` from ``genai_prices.data`` instead of ``get_snapshot()``, so a snapshot that
anything else in the process installed (``UpdatePrices`` fetches one at run time) can never change
what we charge or make :data:`GENAI_SOURCE` lie about where a price came from.

``price_variants`` (priority/flex service tiers, batch processing) become records of their tier
(:func:`genai_tier_history`): the standard record in force, with the keys the variant prices
replaced, as ``ModelInfo.get_prices`` resolves them.

What is *not* carried over, on purpose (docs/pricing.md):

- time-of-day prices (DeepSeek's off-peak windows): those conditional entries (and variants) are
  skipped, so the model's date-based price applies all day.
- variants selected by anything but the service tier (Anthropic's ``speed``, OpenRouter's
  ``route``, Perplexity's ``search_type``): no response field outlay reads names them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING, Any, Final

from ._record import PriceRecord, Tier, TieredPrice

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelPrice

__all__ = [
    "GENAI_SOURCE",
    "GENAI_VERSION",
    "find_provider",
    "genai_history",
    "genai_tier_history",
    "genai_tiers",
    "genai_unit_keys",
]

GENAI_VERSION: Final = _dist_version("genai-prices")
GENAI_SOURCE: Final = f"genai-prices@{GENAI_VERSION}"


@functools.cache
def _snapshot() -> DataSnapshot:
    # Imported lazily: the data module is ~30k lines and takes a noticeable time to import.
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@functools.cache
def genai_unit_keys() -> Mapping[str, tuple[str, int]]:
    """Price key -> (usage unit name, per) for genai-prices' non-token units (searches, pages, ...).

    These are priced when ``Usage.units`` carries the unit by its genai-prices name, e.g.
    ``units={"storage_searches": 3}`` at a model's ``storage_searches_kcount``.
    """
    from genai_prices.data_units import unit_data

    out: dict[str, tuple[str, int]] = {}
    for usage_key, raw in unit_data.items():
        dimensions: Mapping[str, str] = raw.get("dimensions", {})
        if dimensions.get("family") == "tokens" or usage_key in ("web_searches", "requests"):
            continue
        out[str(raw.get("price_key", usage_key))] = (usage_key, int(raw["per"]))
    return out


def find_provider(model: str) -> str | None:
    """The provider genai-prices associates with a bare model name (for the CLI), if any."""
    try:
        return str(_snapshot().find_provider(model.lower(), None, None).id)
    except LookupError:
        return None


def _convert_price(value: Any) -> Decimal | TieredPrice:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return TieredPrice(
            base=value.base, tiers=tuple(Tier(start=t.start, price=t.price) for t in value.tiers)
        )
    if not isinstance(value, Decimal):  # pragma: no cover - guards a data format change
        raise TypeError(f"unexpected genai-prices price {value!r}")
    return value


def _prices_of(model_price: ModelPrice) -> dict[str, Decimal | TieredPrice]:
    return {
        key: _convert_price(value)
        for key, value in model_price.__dict__.items()
        if not key.startswith("_") and value is not None
    }


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def _selected(conditional: list[Any], day: date) -> int:
    """Index of the conditional price genai-prices uses on ``day`` (time-of-day entries skipped)."""
    from genai_prices.types import StartDateConstraint

    # Same rule as genai_prices.types.ModelInfo.get_prices: the last active entry wins, else the first.
    for index in range(len(conditional) - 1, -1, -1):
        constraint = conditional[index].constraint
        if constraint is None:
            return index
        if isinstance(constraint, StartDateConstraint) and day >= constraint.start_date:
            return index
    return 0


@functools.lru_cache(maxsize=4096)
def genai_history(provider: str, model: str) -> tuple[PriceRecord, ...]:
    """Every price record genai-prices has for ``provider``/``model`` (lower case), oldest first.

    The model reference may be a dated id or alias (``gpt-4o-2024-08-06``): genai-prices' own
    matching resolves it; records carry the canonical provider and model ids.
    """
    from genai_prices.types import ModelPrice, StartDateConstraint

    try:
        found_provider, info = _snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return ()
    provider_id, model_id = str(found_provider.id), str(info.id)
    if isinstance(info.prices, ModelPrice):
        return (PriceRecord(provider_id, model_id, GENAI_SOURCE, prices=_prices_of(info.prices)),)

    conditional = list(info.prices)
    starts = sorted(
        {c.constraint.start_date for c in conditional if isinstance(c.constraint, StartDateConstraint)}
    )
    # Elementary intervals between start dates; a representative day of each decides the entry.
    segments: list[tuple[date | None, int]] = []
    first_day = starts[0] - timedelta(days=1) if starts else date(1970, 1, 1)
    for start, probe in [(None, first_day), *((s, s) for s in starts)]:
        index = _selected(conditional, probe)
        if not segments or segments[-1][1] != index:
            segments.append((start, index))
    records = []
    for position, (start, index) in enumerate(segments):
        end = segments[position + 1][0] if position + 1 < len(segments) else None
        records.append(
            PriceRecord(
                provider_id,
                model_id,
                GENAI_SOURCE,
                effective_from=_midnight(start) if start else None,
                effective_to=_midnight(end) if end else None,
                prices=_prices_of(conditional[index].prices),
            )
        )
    return tuple(records)


def _price_context(tier: str) -> dict[str, str]:
    """The genai-prices request context of a call served at ``tier``: batch is a ``processing``
    mode there, the others (``priority``, ``flex``, ...) a ``service_tier``."""
    return {"processing": "batch"} if tier == "batch" else {"service_tier": tier}


@functools.lru_cache(maxsize=1024)
def genai_tiers(provider: str, model: str) -> frozenset[str]:
    """The service tiers genai-prices' variants of ``provider``/``model`` are for (``batch`` for
    batch processing); :func:`genai_tier_history` says which of them price a call on their own."""
    try:
        _, info = _snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return frozenset()
    tiers = set()
    for variant in info.price_variants or ():
        tier, processing = variant.when.get("service_tier"), variant.when.get("processing")
        if isinstance(tier, str):
            tiers.add(tier.strip().lower())
        if processing == "batch":
            tiers.add("batch")
    return frozenset(tiers)


@functools.lru_cache(maxsize=4096)
def genai_tier_history(provider: str, model: str, tier: str) -> tuple[PriceRecord, ...]:
    """The records genai-prices has for calls served at the non-standard ``tier``, oldest first.

    Each is the standard record in force with the keys of the variants in force replaced (the first
    variant naming a key wins, as ``ModelInfo.get_prices`` resolves them), over the dates where
    that combination holds. Where no variant of the tier is in force there is no record: the tier's
    price is unknown then, never the standard one. As genai-prices does, variants apply only to a
    model of the provider asked for, not to one found through a fallback provider.
    """
    from genai_prices.types import ModelPrice, StartDateConstraint, TimeOfDateConstraint

    try:
        found_provider, info = _snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return ()
    if not any(info is candidate for candidate in found_provider.models):
        return ()
    context = _price_context(tier)
    variants = [
        v
        for v in info.price_variants or ()
        if not isinstance(v.constraint, TimeOfDateConstraint)
        and all(context.get(key) == value for key, value in v.when.items())
    ]
    if not variants:
        return ()
    conditional = [] if isinstance(info.prices, ModelPrice) else list(info.prices)
    constraints = [c.constraint for c in conditional] + [v.constraint for v in variants]
    starts = sorted({c.start_date for c in constraints if isinstance(c, StartDateConstraint)})
    first_day = starts[0] - timedelta(days=1) if starts else date(1970, 1, 1)
    # (start, standard index, indexes of the variants in force) over each elementary interval.
    segments: list[tuple[date | None, int, tuple[int, ...]]] = []
    for start, probe in [(None, first_day), *((s, s) for s in starts)]:
        index = _selected(conditional, probe) if conditional else 0
        active = tuple(
            i
            for i, v in enumerate(variants)
            if v.constraint is None
            or (isinstance(v.constraint, StartDateConstraint) and probe >= v.constraint.start_date)
        )
        if not segments or segments[-1][1:] != (index, active):
            segments.append((start, index, active))
    provider_id, model_id = str(found_provider.id), str(info.id)
    records = []
    for position, (start, index, active) in enumerate(segments):
        if not active:
            continue
        end = segments[position + 1][0] if position + 1 < len(segments) else None
        standard = info.prices if isinstance(info.prices, ModelPrice) else conditional[index].prices
        prices = _prices_of(standard)
        replaced: dict[str, Decimal | TieredPrice] = {}
        for i in active:
            for key, value in _prices_of(variants[i].prices).items():
                replaced.setdefault(key, value)
        prices.update(replaced)
        records.append(
            PriceRecord(
                provider_id,
                model_id,
                GENAI_SOURCE,
                effective_from=_midnight(start) if start else None,
                effective_to=_midnight(end) if end else None,
                prices=prices,
                service_tier=tier,
            )
        )
    return tuple(records)
