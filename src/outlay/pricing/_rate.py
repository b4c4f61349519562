"""Exact rating of one :class:`Usage` against one :class:`PriceRecord`.

Kinds and how tokens are split between them (``Usage.input_tokens`` includes cache reads and
writes; ``output_tokens`` includes reasoning):

- ``cache_read``, ``cache_write_5m``, ``cache_write_1h``, ``input_audio``, ``input_image`` are
  carved out of input *when the model has a price for them* (and ``cache_audio_read``, the
  ``units["cache_audio_read_tokens"]`` part of the cache reads, out of ``cache_read``); a
  cache-write TTL without its own price falls back to ``cache_write_mtok``. Whatever is not carved
  out stays in ``input`` — the same decomposition genai-prices uses, so an unpriced sub-kind is
  charged at the full input price, never at zero.
- ``output_reasoning``, ``output_audio``, ``output_image`` are carved out of output the same way.
- ``web_searches`` (per thousand), ``requests`` (per thousand; one per rated call unless
  ``units["requests"]`` says otherwise), and ``unit:<name>`` for ``Usage.units``.

A kind with a non-zero count and no price makes the rating unpriced (``cost=None``) with a reason
naming it; the breakdown keeps the kinds that could be priced. All arithmetic is exact under
:data:`MONEY_CONTEXT`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, Inexact
from typing import Final

from outlay._errors import InvalidUsage
from outlay._money import MONEY_CONTEXT, amount_problem
from outlay._rating import Rating
from outlay._usage import CACHE_AUDIO_READ_UNIT, Usage

from ._genai import genai_unit_keys
from ._record import COUNT_PRICE_KEYS, TOKEN_PRICE_KEYS, PriceRecord, Tier, TieredPrice

__all__ = ["RatingPlan", "compile_plan"]

_CTX: Final = MONEY_CONTEXT
_MILLION: Final = Decimal(1_000_000)
_THOUSAND: Final = Decimal(1_000)


def _per_one(price: Decimal | TieredPrice, per: Decimal) -> Decimal | TieredPrice:
    """The price of ONE unit (exact: dividing by a power of ten never rounds at 60 digits)."""
    if isinstance(price, TieredPrice):
        return TieredPrice(
            base=_CTX.divide(price.base, per),
            tiers=tuple(Tier(start=t.start, price=_CTX.divide(t.price, per)) for t in price.tiers),
        )
    return _CTX.divide(price, per)


# (kind, Usage attribute) carved out of input / output when the plan prices the kind.
_INPUT_PARTS: Final = (
    ("cache_read", "cache_read_tokens"),
    ("cache_write_5m", "cache_write_5m_tokens"),
    ("cache_write_1h", "cache_write_1h_tokens"),
    ("input_audio", "input_audio_tokens"),
    ("input_image", "input_image_tokens"),
)
_OUTPUT_PARTS: Final = (
    ("output_reasoning", "reasoning_tokens"),
    ("output_audio", "output_audio_tokens"),
    ("output_image", "output_image_tokens"),
)

_Part = tuple[str, int | Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class RatingPlan:
    """A record compiled for rating: every price already converted to the price of one unit.

    Rating is on the per-call metering path, so everything that does not depend on the usage is
    done here once: tiered prices become one flat table per tier band (``tables[i]`` applies when
    ``bisect_left(starts, input_tokens) == i``), cache-write TTLs have their fallback resolved, and
    the version string is built.
    """

    record: PriceRecord
    version: str
    display: Mapping[str, Decimal | TieredPrice]
    starts: tuple[int, ...]
    tables: tuple[Mapping[str, Decimal], ...]
    input_parts: tuple[tuple[str, str], ...]
    output_parts: tuple[tuple[str, str], ...]
    units: Mapping[str, Decimal]
    per_request: bool
    cached_audio: bool  # the model prices cached audio apart from cached text

    def unit_prices(self) -> dict[str, Decimal | TieredPrice]:
        """Kind -> price of one unit (tiered where it is), named as a rating's breakdown names kinds."""
        out = dict(self.display)
        out.update({f"unit:{name}": price for name, price in self.units.items()})
        return out

    def rate(self, usage: Usage, provider: str, model: str) -> Rating:
        n = usage.input_tokens
        table = self.tables[bisect.bisect_left(self.starts, n)] if self.starts else self.tables[0]
        parts: list[_Part] = []
        input_left = n
        for kind, attr in self.input_parts:
            count = getattr(usage, attr)
            if count:
                parts.append((kind, count, table[kind]))
                input_left -= count
        if usage.units and CACHE_AUDIO_READ_UNIT in usage.units:
            problem = self._carve_cached_audio(usage, table, parts)
            if problem is not None:
                input_left = -1
            elif self.cached_audio and "cache_read" not in self.display:
                input_left -= int(usage.units[CACHE_AUDIO_READ_UNIT])
        output_left = usage.output_tokens
        for kind, attr in self.output_parts:
            count = getattr(usage, attr)
            if count:
                parts.append((kind, count, table[kind]))
                output_left -= count
        if input_left < 0 or output_left < 0:
            # Usage cannot say whether audio/image tokens were also cached: refuse to guess a split.
            return Rating(
                cost=None,
                priced=False,
                price_version=self.version,
                reason=f"cannot split the tokens of {provider}/{model} between its separately priced"
                " kinds (audio/image/reasoning tokens overlap cached tokens, or units"
                f"[{CACHE_AUDIO_READ_UNIT!r}] is not a whole part of cache_read_tokens);"
                " rate it with an override",
                provider=provider,
                model=model,
            )
        missing: list[str] = []
        for kind, count in (
            ("input", input_left),
            ("output", output_left),
            ("web_searches", usage.web_searches),
        ):
            if count:
                price = table.get(kind)
                if price is None:
                    missing.append(kind)
                else:
                    parts.append((kind, count, price))
        if self.per_request or usage.units:
            self._rate_units(usage, table, parts, missing)
        return self._finish(parts, missing, provider, model)

    def _carve_cached_audio(
        self, usage: Usage, table: Mapping[str, Decimal], parts: list[_Part]
    ) -> str | None:
        """Charge the cached audio (a part of the cache reads) at its own price, if the model has one.

        Returns a problem when the count cannot be a part of ``cache_read_tokens``."""
        quantity = usage.units[CACHE_AUDIO_READ_UNIT]
        if quantity != quantity.to_integral_value() or quantity > usage.cache_read_tokens:
            return "not a part of the cache reads"
        audio = int(quantity)
        if not self.cached_audio or not audio:
            return None  # left in the cache reads, at their price (genai-prices' decomposition)
        for i, (kind, count, price) in enumerate(parts):
            if kind == "cache_read":
                parts[i] = (kind, count - audio, price)
                if count == audio:
                    del parts[i]
                break
        parts.append(("cache_audio_read", audio, table["cache_audio_read"]))
        return None

    def _rate_units(
        self, usage: Usage, table: Mapping[str, Decimal], parts: list[_Part], missing: list[str]
    ) -> None:
        if self.per_request:  # one request per rated call, unless the usage counted them
            parts.append(("requests", usage.units.get("requests", 1), table["requests"]))
        for name, quantity in usage.units.items():
            if (name == "requests" and self.per_request) or name == CACHE_AUDIO_READ_UNIT:
                continue  # counted above / a part of the cache reads, rated with them
            unit_price = self.units.get(name)
            if unit_price is None:
                missing.append(f"unit:{name}")
            else:
                parts.append((f"unit:{name}", quantity, unit_price))

    def _finish(self, parts: list[_Part], missing: list[str], provider: str, model: str) -> Rating:
        breakdown: dict[str, Decimal] = {}
        unit_prices: dict[str, Decimal] = {}
        total = Decimal(0)
        too_long: str | None = None
        for kind, count, unit_price in parts:
            try:
                cost = _CTX.multiply(unit_price, count)
                total = _CTX.add(total, cost)
            except Inexact:
                if isinstance(count, Decimal) and amount_problem(count) is not None:
                    # The quantity itself is more than any event or ledger holds: refuse it.
                    raise InvalidUsage(
                        f"{count} x {unit_price} needs more than {_CTX.prec} digits; cannot rate it exactly",
                        field=kind.replace("unit:", "units.") if kind.startswith("unit:") else kind,
                    ) from None
                # A quantity a ledger holds (up to 36 places) times a long price: a cost of more
                # digits than any ledger holds. Kept unpriced with the reason, as for the cost of
                # more than 36 places below, so neither the call nor a re-rating is lost to it.
                too_long = f"{kind} ({count} x {unit_price}) needs more than {_CTX.prec} digits"
                continue
            breakdown[kind] = cost
            unit_prices[kind] = unit_price
        reason: str | None = None
        if missing:
            reason = f"no price for {', '.join(missing)} of {provider}/{model} in {self.version}"
        elif too_long is not None:
            reason = f"the cost under {self.version} of {too_long}: give its prices fewer decimal places"
        elif (problem := amount_problem(total)) is not None:
            # A price with many decimal places (an override's) times a fractional count can make
            # a cost no event or ledger holds exactly: the call is kept, unpriced with the reason
            # (re-rated once the prices are fixed), rather than its event refused and lost.
            what = problem.split(" (")[0]
            reason = f"the cost under {self.version} {what}: give its prices fewer decimal places"
        return Rating(
            cost=total if reason is None else None,
            priced=reason is None,
            price_version=self.version,
            reason=reason,
            breakdown=breakdown,
            unit_prices=unit_prices,
            provider=provider,
            model=model,
        )


def _display(record: PriceRecord) -> dict[str, Decimal | TieredPrice]:
    out: dict[str, Decimal | TieredPrice] = {
        kind: _per_one(record.prices[key], _MILLION)
        for kind, key in TOKEN_PRICE_KEYS.items()
        if key in record.prices
    }
    parent = out.pop("cache_write", None)
    if parent is not None:  # a TTL without its own price is charged the parent cache-write price
        out.setdefault("cache_write_5m", parent)
        out.setdefault("cache_write_1h", parent)
    for kind, key in COUNT_PRICE_KEYS.items():
        if key in record.prices:
            out[kind] = _per_one(record.prices[key], _THOUSAND)
    return out


def _flat(prices: Mapping[str, Decimal | TieredPrice], input_tokens: int) -> dict[str, Decimal]:
    return {
        kind: price if isinstance(price, Decimal) else price.for_input(input_tokens)
        for kind, price in prices.items()
    }


def compile_plan(record: PriceRecord) -> RatingPlan:
    """Convert ``record`` to per-one-unit prices, once, so rating is a handful of multiplications."""
    display = _display(record)
    starts = tuple(sorted({t.start for p in display.values() if isinstance(p, TieredPrice) for t in p.tiers}))
    # Band i covers starts[i-1] < input <= starts[i]; probe each band at its smallest input.
    probes = (0, *(start + 1 for start in starts))
    tables = tuple(_flat(display, probe) for probe in probes)
    units: dict[str, Decimal] = {}
    for key, (name, per) in genai_unit_keys().items():
        value = record.prices.get(key)
        if isinstance(value, Decimal):
            try:
                units[name] = _CTX.divide(value, Decimal(per))
            except Inexact:
                # e.g. a per-hour price that has no exact per-second value: leave the unit unpriced
                # (rated as "no price for unit:<name>") rather than round money.
                continue
    units.update(record.units)  # the user's own unit prices win
    return RatingPlan(
        record=record,
        version=record.version,
        display=display,
        starts=starts,
        tables=tables,
        input_parts=tuple(part for part in _INPUT_PARTS if part[0] in display),
        output_parts=tuple(part for part in _OUTPUT_PARTS if part[0] in display),
        units=units,
        per_request="requests" in display,
        cached_audio="cache_audio_read" in display,
    )
