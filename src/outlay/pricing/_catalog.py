"""``PriceCatalog``: genai-prices data plus the user's overrides, resolved by provider, model and time.

Precedence at an instant ``at``: an override record in force wins over genai-prices (an exact model
name over a glob, then the first in file order); otherwise the genai-prices record in force. The
winner's prices are used as a whole — an override *replaces* genai-prices' record for that
provider/model, it does not merge key by key.

A call served at a non-standard service tier (``Usage.service_tier``: ``priority``, ``flex``,
``batch``, ...) has its own precedence: an override of that tier, then an override with no tier
(it replaces genai-prices' prices for every call, as documented), then genai-prices' variant price
of the tier. With none of these in force the call is unpriced, with a reason naming the tier: the
standard price would under-count a priority call and over-count a flex or batch one.

Resolution is cached per (provider, model, tier) as a timeline of non-overlapping segments, so a
warm ``rate()`` is an LRU hit, a bisect and a few Decimal multiplications.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Final

from outlay._errors import InvalidInput
from outlay._rating import Rating
from outlay._usage import STANDARD_TIERS, TIER_NAME, Usage

from ._genai import (
    GENAI_SOURCE,
    GENAI_VERSION,
    find_provider,
    genai_history,
    genai_tier_history,
    genai_tiers,
)
from ._overrides import Overrides, load_overrides, provider_id
from ._rate import RatingPlan, compile_plan
from ._record import PriceRecord

__all__ = ["PriceCatalog", "default_catalog", "estimate", "rate"]

_FLOOR: Final = datetime.min.replace(tzinfo=UTC)
_GLOB_CHARS: Final = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class _Timeline:
    """Contiguous segments starting at ``starts[i]`` and the plan in force in each (or None)."""

    starts: tuple[datetime, ...]
    plans: tuple[RatingPlan | None, ...]
    records: tuple[PriceRecord, ...]  # every candidate, oldest first (for history)

    def at(self, moment: datetime) -> RatingPlan | None:
        index = bisect.bisect_right(self.starts, moment) - 1
        return self.plans[index] if index >= 0 else None


def _check_at(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime):
        raise InvalidInput(f"expected an aware datetime, got {type(at).__name__}", field="at")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput(
            f"naive datetime {at.isoformat()} is ambiguous; pass an aware one (tzinfo=UTC)", field="at"
        )
    return at


def _check_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"expected a non-empty string, got {value!r}", field=field)
    return value


class PriceCatalog:
    """Versioned prices: the pinned genai-prices data plus optional :class:`Overrides`."""

    def __init__(self, overrides: Overrides | None = None, *, cache_size: int = 4096) -> None:
        self.overrides = overrides
        self.version = GENAI_SOURCE if overrides is None else f"{GENAI_SOURCE}+{overrides.source}"
        self._timeline = functools.lru_cache(maxsize=cache_size)(self._build_timeline)

    @classmethod
    def load(cls, overrides: str | os.PathLike[str] | None = None) -> PriceCatalog:
        """A catalog of genai-prices data plus the overrides file at ``overrides``, if given."""
        return cls(load_overrides(overrides) if overrides is not None else None)

    def __repr__(self) -> str:
        return f"PriceCatalog(version={self.version!r})"

    # -- resolution -------------------------------------------------------------------------------

    def _matching_overrides(
        self, provider: str, model: str, genai: Sequence[PriceRecord], tier: str | None
    ) -> list[PriceRecord]:
        if self.overrides is None:
            return []
        # An override for the canonical genai-prices id also covers its aliases and dated ids.
        providers = {provider, provider_id(provider)} | {r.provider for r in genai}
        models = {model} | {r.model for r in genai}
        matched = [
            record
            for record in self.overrides.records
            if record.provider in providers
            and record.service_tier in (None, tier)
            and any(fnmatchcase(m, record.model) for m in models)
        ]
        # The tier's own overrides first (an untiered one prices every tier it has no entry for),
        # exact names before globs, and among exact names the model asked for before the genai-prices
        # id it is an alias of (an entry for gpt-4o-2024-08-06 beats one for gpt-4o when rating
        # gpt-4o-2024-08-06, wherever they are in the file); the sort is stable, so file order
        # breaks the remaining ties.
        matched.sort(
            key=lambda r: (r.service_tier is None, bool(_GLOB_CHARS & set(r.model)), r.model != model)
        )
        return matched

    def _build_timeline(self, provider: str, model: str, tier: str | None = None) -> _Timeline:
        provider, model = provider.strip().lower(), model.strip().lower()
        genai = genai_history(provider, model)
        overrides = self._matching_overrides(provider, model, genai, tier)
        if tier is not None:  # the tier's variant prices; never the standard ones (module docstring)
            genai = genai_tier_history(provider, model, tier)
        ranked = [*overrides, *genai]  # precedence order
        cuts = {_FLOOR} | {
            moment for r in ranked for moment in (r.effective_from, r.effective_to) if moment is not None
        }
        plans: dict[int, RatingPlan] = {}
        starts: list[datetime] = []
        chosen: list[RatingPlan | None] = []
        for start in sorted(cuts):
            # Every record is wholly in or out of each elementary segment, so probing its start suffices.
            winner = next((r for r in ranked if r.in_force(start)), None)
            plan = None if winner is None else plans.setdefault(id(winner), compile_plan(winner))
            if chosen and chosen[-1] is plan:
                continue
            starts.append(start)
            chosen.append(plan)
        history = sorted(ranked, key=lambda r: (r.effective_from or _FLOOR, r.source != GENAI_SOURCE))
        return _Timeline(tuple(starts), tuple(chosen), tuple(history))

    def _plan(self, provider: str, model: str, at: datetime, tier: str | None = None) -> RatingPlan | None:
        # Keyed by the names as given (no normalising on the hot path); the builder normalises.
        return self._timeline(provider, model, tier).at(at)

    def resolve(
        self, provider: str, model: str, at: datetime | None = None, *, service_tier: str | None = None
    ) -> PriceRecord | None:
        """The price record in force for ``provider``/``model`` at ``at`` (default now), or None;
        with ``service_tier``, the one that rates a call served at that tier."""
        tier = Usage(service_tier=service_tier).service_tier if service_tier is not None else None
        plan = self._plan(_check_name("provider", provider), _check_name("model", model), _check_at(at), tier)
        return None if plan is None else plan.record

    def history(self, provider: str, model: str, *, service_tier: str | None = None) -> list[PriceRecord]:
        """Every record (genai-prices and overrides) for ``provider``/``model``, oldest first; with
        ``service_tier``, those that rate a call served at that tier (its own overrides, untiered
        overrides, genai-prices' variants for it)."""
        tier = Usage(service_tier=service_tier).service_tier if service_tier is not None else None
        return list(
            self._timeline(_check_name("provider", provider), _check_name("model", model), tier).records
        )

    def tiers(self, provider: str, model: str) -> list[str]:
        """The non-standard service tiers ``provider``/``model`` has prices of its own for, at any
        time (genai-prices' variants, ``service_tier`` overrides), sorted."""
        _check_name("provider", provider)
        _check_name("model", model)
        candidates = set(genai_tiers(provider.strip().lower(), model.strip().lower()))
        if self.overrides is not None:
            candidates |= {r.service_tier for r in self.overrides.records if r.service_tier is not None}
        # Only a tier whose own record rates calls at some time: an untiered override replaces
        # genai-prices' variants too, so a variant it covers wholly prices nothing.
        return sorted(
            tier
            for tier in candidates - STANDARD_TIERS  # genai-prices has "default" variants too
            if TIER_NAME.match(tier)
            and any(r.service_tier == tier for r in self.in_force(provider, model, service_tier=tier))
        )

    def in_force(self, provider: str, model: str, *, service_tier: str | None = None) -> list[PriceRecord]:
        """The records of :meth:`history` that rate a call at some time, oldest first: one that a
        record of higher precedence covers for all of its dates (an override over genai-prices) is
        never in force, whatever its dates say."""
        tier = Usage(service_tier=service_tier).service_tier if service_tier is not None else None
        timeline = self._timeline(_check_name("provider", provider), _check_name("model", model), tier)
        used = {id(plan.record) for plan in timeline.plans if plan is not None}
        return [record for record in timeline.records if id(record) in used]

    def find_provider(self, model: str) -> str | None:
        """The provider a bare model name belongs to: genai-prices' guess, else a unique override."""
        found = find_provider(model)
        if found is not None or self.overrides is None:
            return found
        name = model.strip().lower()
        exact = {r.provider for r in self.overrides.records if r.model == name}
        if len(exact) == 1:
            return exact.pop()
        globbed = {r.provider for r in self.overrides.records if fnmatchcase(name, r.model)}
        return globbed.pop() if not exact and len(globbed) == 1 else None

    # -- rating -----------------------------------------------------------------------------------

    def rate(self, usage: Usage, *, provider: str, model: str, at: datetime | None = None) -> Rating:
        """The exact cost of ``usage`` on ``provider``/``model`` at ``at`` (default now, UTC)."""
        if not isinstance(usage, Usage):
            raise InvalidInput(f"expected a Usage, got {type(usage).__name__}", field="usage")
        _check_name("provider", provider)
        _check_name("model", model)
        moment = _check_at(at)
        plan = self._plan(provider, model, moment, usage.service_tier)
        if plan is None:
            return Rating(
                cost=None,
                priced=False,
                price_version=self.version,
                reason=self._no_price_reason(provider, model, moment, usage.service_tier),
                provider=provider,
                model=model,
            )
        return plan.rate(usage, provider, model)

    def _no_price_reason(self, provider: str, model: str, at: datetime, tier: str | None = None) -> str:
        where = f"genai-prices {GENAI_VERSION} or overrides"
        if tier is not None and self._plan(provider, model, at) is not None:
            # Priced at standard, a priority call would be recorded below what it cost.
            return (
                f"no {tier!r} service tier price for {provider}/{model} at {at.isoformat()} in {where}"
                f" (the call was served at that tier; its standard price is not what it cost):"
                f' give one in an overrides file with service_tier = "{tier}"'
            )
        if self.history(provider, model):
            return f"no price for {provider}/{model} at {at.isoformat()} in {where} (none in force then)"
        return f"no price for {provider}/{model} in {where}"

    def estimate(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        at: datetime | None = None,
        service_tier: str | None = None,
    ) -> Decimal | None:
        """Worst-case cost of a call, for budget admission; ``None`` when it cannot be priced.

        All input is charged as uncached input and all ``max_output_tokens`` at the higher of the
        output and reasoning prices (plus the per-request price, if any). With ``service_tier`` (the
        tier the request asks for), the higher of that tier's and the standard price, when the tier
        has one: a provider may serve the call at either, and a priority call estimated at standard
        would let a hard limit be overshot by the difference. A model with no standard price
        but one for the asked tier is estimated at that tier's.
        """
        for field, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"expected a non-negative integer, got {value!r}", field=field)
        standard = self._estimate(provider, model, input_tokens, max_output_tokens, at, None)
        tier = Usage(service_tier=service_tier).service_tier if service_tier is not None else None
        if tier is None:
            return standard
        asked = self._estimate(provider, model, input_tokens, max_output_tokens, at, tier)
        if standard is None or asked is None:
            # A model priced at the asked tier only (its own override) holds that price, not the
            # unpriced fallback, which may be far below what the call will be charged.
            return asked if standard is None else standard
        return max(standard, asked)

    def _estimate(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        at: datetime | None,
        tier: str | None,
    ) -> Decimal | None:
        usage = Usage(input_tokens=input_tokens, output_tokens=max_output_tokens, service_tier=tier)
        rating = self.rate(usage, provider=provider, model=model, at=at)
        if rating.cost is None:
            return None
        if max_output_tokens:
            as_reasoning = Usage(
                input_tokens=input_tokens,
                output_tokens=max_output_tokens,
                reasoning_tokens=max_output_tokens,
                service_tier=tier,
            )
            other = self.rate(as_reasoning, provider=provider, model=model, at=at).cost
            if other is not None and other > rating.cost:
                return other
        return rating.cost


@functools.lru_cache(maxsize=8)
def _catalog_for(overrides_path: str | None) -> PriceCatalog:
    return PriceCatalog.load(overrides_path)


def default_catalog() -> PriceCatalog:
    """The process-wide catalog: genai-prices plus the overrides file named by ``OUTLAY_PRICES``.

    Cached per value of ``OUTLAY_PRICES``; an edited file is picked up by a new process (or by
    building a catalog with :meth:`PriceCatalog.load`), never half-way through one.
    """
    return _catalog_for(os.environ.get("OUTLAY_PRICES") or None)


def rate(
    usage: Usage,
    *,
    provider: str,
    model: str,
    at: datetime | None = None,
    catalog: PriceCatalog | None = None,
) -> Rating:
    """Rate ``usage`` with ``catalog`` (default: :func:`default_catalog`). See :meth:`PriceCatalog.rate`."""
    return (catalog or default_catalog()).rate(usage, provider=provider, model=model, at=at)


def estimate(
    *,
    provider: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    at: datetime | None = None,
    catalog: PriceCatalog | None = None,
    service_tier: str | None = None,
) -> Decimal | None:
    """Worst-case cost of a call for budget admission. See :meth:`PriceCatalog.estimate`."""
    return (catalog or default_catalog()).estimate(
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        at=at,
        service_tier=service_tier,
    )
