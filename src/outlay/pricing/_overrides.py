"""Price overrides: the user's own effective-dated prices and custom units, from a TOML file.

```toml
[[price]]
provider = "self-hosted"
model = "llama-3.1-70b"            # exact, or a glob such as "claude-opus-*"
effective_from = 2026-01-01        # inclusive; a TOML date (midnight UTC) or an aware datetime
effective_to = 2026-07-01          # exclusive; optional
units = { gpu_seconds = "0.00125" }  # USD per ONE unit

[[price]]
provider = "openai"
model = "gpt-4o"
effective_from = 2026-03-01
input_mtok = "2.00"                # USD per million tokens, as genai-prices publishes them
output_mtok = "8"
cache_read_mtok = { base = "1", tiers = [{ start = 200000, price = "2" }] }  # tiered by input

[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5"
service_tier = "priority"          # rates only calls served at this tier
input_mtok = "5.10"
output_mtok = "25.50"
```

Numbers are read with ``parse_float=Decimal`` so ``0.1`` stays exactly 0.1; strings are accepted
too. Every problem in the file is collected and reported together, each naming the file, the entry
(``price[2]``) and the field.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput
from outlay._money import MAX_PLACES, to_money
from outlay._usage import STANDARD_TIERS, TIER_NAME, UNIT_NAME
from outlay.events._event import MAX_ID
from outlay.providers import normalize_provider

from ._record import OVERRIDE_PRICE_KEYS, PriceRecord, Tier, TieredPrice

__all__ = ["Overrides", "load_overrides", "parse_overrides"]

_ENTRY_KEYS: Final = frozenset(
    {"provider", "model", "effective_from", "effective_to", "units", "note", "service_tier"}
)
_NAME = re.compile(r"^[A-Za-z0-9*?\[][A-Za-z0-9_.:/@*?\[\]-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Overrides:
    """The validated records of one overrides file; ``source`` is ``overrides@<sha256-12>``."""

    source: str
    records: tuple[PriceRecord, ...]
    path: str | None = None


class _Collector:
    """Collects every error of a file, so one `prices check` run shows them all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.errors:
            count = len(self.errors)
            lines = "\n".join(f"  {error}" for error in self.errors)
            raise ConfigError(f"{self.name}: {count} error{'s' if count > 1 else ''}:\n{lines}")


# A price per million tokens (per thousand counts) is divided by 10^6 (10^3) to rate one: with
# more places than this, a cost would pass the 36 places a ledger holds exactly (MAX_PLACES).
_PLACES_PER_KEY: Final = (
    (re.compile(r"_mtok\b"), MAX_PLACES - 6),
    (re.compile(r"_kcount\b"), MAX_PLACES - 3),
)


def _price(value: object, where: str, errors: _Collector) -> Decimal | None:
    if isinstance(value, str | int | Decimal) and not isinstance(value, bool):
        try:
            price = to_money(value, field=where)
        except InvalidInput as exc:
            errors.add(where, str(exc).removeprefix(f"{where}: "))
            return None
        exponent = price.normalize().as_tuple().exponent
        for pattern, places in _PLACES_PER_KEY:
            if pattern.search(where) and isinstance(exponent, int) and -exponent > places:
                errors.add(where, f"has more than {places} decimal places, got {value!r}")
                return None
        return price
    errors.add(where, f"expected a price (a number or decimal string), got {value!r}")
    return None


def _tiered(value: Mapping[str, Any], where: str, errors: _Collector) -> TieredPrice | None:
    unknown = sorted(set(value) - {"base", "tiers"})
    if unknown:
        errors.add(where, f"unknown key(s) {', '.join(unknown)} (expected base, tiers)")
        return None
    base = _price(value.get("base"), f"{where}.base", errors)
    raw_tiers = value.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        errors.add(f"{where}.tiers", "expected a non-empty list of {start = <tokens>, price = <price>}")
        return None
    tiers: list[Tier] = []
    previous = -1
    for i, raw in enumerate(raw_tiers):
        at = f"{where}.tiers[{i}]"
        if not isinstance(raw, dict) or set(raw) != {"start", "price"}:
            errors.add(at, "expected {start = <tokens>, price = <price>}")
            continue
        start = raw["start"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            errors.add(f"{at}.start", f"expected a non-negative integer token count, got {start!r}")
            continue
        if start <= previous:
            errors.add(
                f"{at}.start", f"tiers must be in increasing order of start ({start} after {previous})"
            )
        previous = start
        price = _price(raw["price"], f"{at}.price", errors)
        if price is not None:
            tiers.append(Tier(start=start, price=price))
    if base is None or len(tiers) != len(raw_tiers):
        return None
    return TieredPrice(base=base, tiers=tuple(tiers))


def provider_id(name: str) -> str:
    """``name`` as outlay records it (``gemini`` -> ``google``), or lower-cased if it is not one
    outlay knows (an override may price a self-hosted provider never declared in this process)."""
    try:
        return normalize_provider(name)
    except InvalidInput:
        return name.lower()


def _instant(value: object, where: str, errors: _Collector) -> datetime | None:
    if isinstance(value, str):
        try:
            value = (
                datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
            )
        except ValueError:
            errors.add(where, f"not an ISO date or datetime: {value!r}")
            return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            errors.add(where, f"datetime {value.isoformat()} has no UTC offset; add Z or +hh:mm")
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            errors.add(where, f"{value.isoformat()} is outside the dates a price can have")
            return None
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=UTC)
    errors.add(where, f"expected a date or datetime, got {value!r}")
    return None


def _entry(index: int, raw: object, source: str, errors: _Collector) -> PriceRecord | None:
    at = f"price[{index}]"
    if not isinstance(raw, dict):
        errors.add(at, "expected a table")
        return None
    before = len(errors.errors)
    unknown = sorted(set(raw) - _ENTRY_KEYS - OVERRIDE_PRICE_KEYS)
    for key in unknown:
        errors.add(f"{at}.{key}", "unknown key (expected a price key such as input_mtok, units, or dates)")
    names: dict[str, str] = {}
    for key in ("provider", "model"):
        value = raw.get(key)
        if not isinstance(value, str) or not _NAME.match(value):
            errors.add(
                f"{at}.{key}",
                f"required: a non-empty name (letters, digits, _ . : / @ - and globs), got {value!r}",
            )
        else:
            names[key] = value.lower() if key == "model" else provider_id(value)
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        errors.add(f"{at}.note", f"expected a string, got {note!r}")
        note = None
    tier = raw.get("service_tier")
    if tier is not None:
        # Named as Usage and the providers' responses name it (any case, spaces around ignored),
        # so an entry for "Priority" rates the calls a response reported as "priority".
        if not isinstance(tier, str) or not TIER_NAME.match(tier.strip().lower()):
            errors.add(f"{at}.service_tier", f"expected a tier name such as 'priority', got {tier!r}")
            tier = None
        elif (tier := tier.strip().lower()) in STANDARD_TIERS:
            errors.add(f"{at}.service_tier", f"{tier!r} is the standard tier: leave service_tier out for it")
            tier = None
    start = (
        _instant(raw["effective_from"], f"{at}.effective_from", errors) if "effective_from" in raw else None
    )
    end = _instant(raw["effective_to"], f"{at}.effective_to", errors) if "effective_to" in raw else None
    if start is not None and end is not None and end <= start:
        errors.add(
            f"{at}.effective_to", f"must be after effective_from ({end.isoformat()} <= {start.isoformat()})"
        )
    prices: dict[str, Decimal | TieredPrice] = {}
    for key in sorted(OVERRIDE_PRICE_KEYS & set(raw)):
        value = raw[key]
        parsed = (
            _tiered(value, f"{at}.{key}", errors)
            if isinstance(value, dict)
            else _price(value, f"{at}.{key}", errors)
        )
        if parsed is not None:
            prices[key] = parsed
    units: dict[str, Decimal] = {}
    raw_units = raw.get("units", {})
    if not isinstance(raw_units, dict):
        errors.add(f"{at}.units", "expected a table of unit name = price per one unit")
        raw_units = {}
    for name, value in raw_units.items():
        if not UNIT_NAME.match(name):
            errors.add(f"{at}.units.{name}", f"unit names must match {UNIT_NAME.pattern}")
            continue
        parsed_unit = _price(value, f"{at}.units.{name}", errors)
        if parsed_unit is not None:
            units[name] = parsed_unit
    if not prices and not units and not unknown and len(errors.errors) == before:
        errors.add(at, "no prices: set at least one price key (input_mtok, output_mtok, ...) or units")
    if len(errors.errors) != before:
        return None
    record = PriceRecord(
        names["provider"],
        names["model"],
        source,
        start,
        end,
        prices=prices,
        units=units,
        note=note,
        service_tier=tier,
    )
    if len(record.version) > MAX_ID:
        # Every event rated with this record stores its version: one too long would be refused.
        errors.add(
            at,
            f"provider and model make a price_version of {len(record.version)} characters"
            f" ({record.version!r}); an event holds at most {MAX_ID}: use a shorter name or a glob",
        )
        return None
    return record


def _check_overlaps(records: Sequence[tuple[int, PriceRecord]], errors: _Collector) -> None:
    groups: dict[tuple[str, str, str | None], list[tuple[int, PriceRecord]]] = {}
    for index, record in records:
        groups.setdefault((record.provider, record.model, record.service_tier), []).append((index, record))
    floor = datetime.min.replace(tzinfo=UTC)
    for (provider, model, tier), group in groups.items():
        which = f"{provider}/{model}" if tier is None else f"{provider}/{model} (service_tier {tier})"
        group.sort(key=lambda item: item[1].effective_from or floor)
        for (i, a), (j, b) in itertools.pairwise(group):
            if a.effective_to is None or a.effective_to > (b.effective_from or floor):
                errors.add(
                    f"price[{j}]",
                    f"{which} overlaps price[{i}]: effective ranges of one provider/model"
                    " must not overlap (end the earlier one with effective_to)",
                )


def parse_overrides(data: bytes, *, name: str = "<overrides>") -> Overrides:
    """Validate an overrides document; raise :class:`ConfigError` listing every problem."""
    errors = _Collector(name)
    source = f"overrides@{hashlib.sha256(data).hexdigest()[:12]}"
    try:
        document = tomllib.loads(data.decode("utf-8"), parse_float=Decimal)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    for key in sorted(set(document) - {"price"}):
        errors.add(key, "unknown top-level key (expected [[price]] entries)")
    entries = document.get("price", [])
    if not isinstance(entries, list):
        errors.add("price", "expected an array of tables: write each entry as [[price]]")
        entries = []
    parsed: list[tuple[int, PriceRecord]] = []
    for index, raw in enumerate(entries):
        record = _entry(index, raw, source, errors)
        if record is not None:
            parsed.append((index, record))
    _check_overlaps(parsed, errors)
    errors.raise_if_any()
    return Overrides(source=source, records=tuple(record for _, record in parsed))


def load_overrides(path: str | os.PathLike[str]) -> Overrides:
    """Read and validate the overrides file at ``path`` (see the module docstring for the format)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read price overrides: {exc.strerror or exc}") from None
    overrides = parse_overrides(data, name=name)
    return Overrides(source=overrides.source, records=overrides.records, path=name)
