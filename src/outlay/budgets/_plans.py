"""Plans: which tier each tenant is on (for entitlements) and its time zone (for calendar budgets).

A plans file (TOML)::

    tiers = ["free", "pro", "enterprise"]     # lowest first
    default_tier = "free"                     # optional: tenants not listed

    [tenants]
    globex = "pro"
    acme = { tier = "enterprise", timezone = "Pacific/Auckland" }
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from outlay._errors import ConfigError, InvalidInput

from ._policy import timezone

__all__ = ["Plans", "load_plans"]


class Plans:
    """Ordered tiers and the tenants on them. Raises :class:`ConfigError` naming the bad field."""

    def __init__(
        self,
        tiers: Sequence[str],
        tenants: Mapping[str, str],
        *,
        timezones: Mapping[str, str] | None = None,
        default_tier: str | None = None,
    ) -> None:
        if isinstance(tiers, str) or not tiers or not all(isinstance(t, str) and t for t in tiers):
            raise ConfigError("expected a non-empty list of tier names, lowest first", field="tiers")
        if len(set(tiers)) != len(tiers):
            raise ConfigError("a tier is listed twice", field="tiers")
        self.tiers: tuple[str, ...] = tuple(tiers)
        self._rank = {tier: index for index, tier in enumerate(self.tiers)}
        if default_tier is not None and (not isinstance(default_tier, str) or default_tier not in self._rank):
            raise ConfigError(
                f"unknown tier {default_tier!r} (tiers: {', '.join(tiers)})", field="default_tier"
            )
        self.default_tier = default_tier
        for tenant, tier in tenants.items():
            if not isinstance(tier, str) or tier not in self._rank:
                raise ConfigError(
                    f"unknown tier {tier!r} (tiers: {', '.join(self.tiers)})", field=f"tenants.{tenant}.tier"
                )
        self.tenants: Mapping[str, str] = MappingProxyType(dict(tenants))
        zones = dict(timezones or {})
        for tenant, name in zones.items():
            try:
                timezone(name)
            except InvalidInput as exc:
                raise ConfigError(str(exc).split(": ", 1)[-1], field=f"tenants.{tenant}.timezone") from None
        self.timezones: Mapping[str, str] = MappingProxyType(zones)

    def tier_of(self, tenant: str | None) -> str | None:
        """The tenant's tier, the default tier for unlisted tenants, or ``None`` (no plan)."""
        if tenant is None:
            return self.default_tier
        return self.tenants.get(tenant, self.default_tier)

    def rank(self, tier: str, *, field: str = "requires") -> int:
        if tier not in self._rank:
            raise InvalidInput(f"unknown tier {tier!r} (tiers: {', '.join(self.tiers)})", field=field)
        return self._rank[tier]

    def allows(self, tenant: str | None, requires: str) -> bool:
        """Whether ``tenant``'s tier is ``requires`` or above."""
        needed = self.rank(requires)
        tier = self.tier_of(tenant)
        return tier is not None and self._rank[tier] >= needed


def load_plans(path: str | Path) -> Plans:
    """Read a plans file; errors name the file and the field."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the plans file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"tiers", "default_tier", "tenants"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    raw = data.get("tenants", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of tenant = tier", field="tenants")
    tiers: dict[str, str] = {}
    zones: dict[str, str] = {}
    for tenant, entry in raw.items():
        if isinstance(entry, str):
            tiers[tenant] = entry
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("tier"), str):
            raise ConfigError(
                f'{where}: expected "tier" or {{ tier = "...", timezone = "..." }}', field=f"tenants.{tenant}"
            )
        extra = set(entry) - {"tier", "timezone"}
        if extra:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(sorted(extra))}", field=f"tenants.{tenant}"
            )
        tiers[tenant] = entry["tier"]
        if "timezone" in entry:
            if not isinstance(entry["timezone"], str):
                raise ConfigError(f"{where}: expected an IANA zone name", field=f"tenants.{tenant}.timezone")
            zones[tenant] = entry["timezone"]
    try:
        return Plans(data.get("tiers", []), tiers, timezones=zones, default_tier=data.get("default_tier"))
    except ConfigError as exc:
        error = ConfigError(f"{where}: {exc}")  # (the message names the field after the file)
        error.field = exc.field  # and so does .field, as for every other error of this file
        raise error from None
