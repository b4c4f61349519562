"""Budget policies: who is limited (scope), over which window (period), by how much (limit, soft).

A policy does not hold spend. At admission it is turned into one counter key for the call, e.g.
``tenant:acme:month:2026-11``: spend is bucketed per period window, computed in the tenant's time
zone, so a new month (or day) simply starts a fresh counter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outlay._errors import InvalidInput
from outlay._money import to_money

from ._downgrade import DowngradeMap
from ._guards import RunGuards

if TYPE_CHECKING:
    from ._decision import Decision

__all__ = ["PERIODS", "SCOPES", "Amount", "Budget", "Scope", "parse_period", "period_bucket", "timezone"]

#: Scopes in the order their keys are taken from a :class:`Scope`.
SCOPES: Final = ("tenant", "workspace", "feature", "user", "run", "request")
#: Periods; ``rolling:<seconds>`` (or ``rolling:<n>s|m|h|d``) is also accepted.
PERIODS: Final = ("run", "hour", "day", "month")
_LIFETIME_SCOPES: Final = frozenset({"run", "request"})
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ROLLING = re.compile(r"rolling:(\d+)([smhd]?)")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Scope:
    """The keys one call is made under; ``None`` means not known (policies on that scope skip it).

    ``runs`` lists the run and its ancestors, innermost first: a run's budget also covers the calls
    made by its child runs.
    """

    tenant: str | None = None
    workspace: str | None = None
    feature: str | None = None
    user: str | None = None
    run: str | None = None
    request: str | None = None
    runs: tuple[str, ...] = ()

    def key_for(self, scope: str) -> str | None:
        value: str | None = getattr(self, scope)
        return value

    @classmethod
    def of(cls, source: object) -> Scope:
        """A :class:`Scope` from a Scope, a mapping, or a context-like object (``CostContext``)."""
        if isinstance(source, Scope):
            return source
        if source is None:
            return cls()
        get: Callable[[str], Any]
        if isinstance(source, Mapping):
            get = source.get
        else:

            def get(name: str) -> Any:
                return getattr(source, name, None)

        # A CostContext's ``run`` is the Run object; its id is ``run_id``. Mappings may say either.
        run = get("run_id")
        if run is None:
            named = get("run")
            run = named if isinstance(named, str) else None
        values = (
            get("tenant"),
            get("workspace"),
            get("feature"),
            get("user"),
            run,
            get("request") or get("request_id"),
        )
        for name, value in zip(SCOPES, values, strict=True):
            if value is not None and (type(value) is not str or not value):
                raise InvalidInput(f"expected a non-empty string, got {value!r}", field=name)
        parent, root = get("parent_run_id"), get("root_run_id")
        if parent is None and root is None:
            runs: tuple[str, ...] = (run,) if run else ()
        else:
            runs = tuple(dict.fromkeys(r for r in (run, parent, root) if r))
        return cls(*values, runs=runs)


def parse_period(period: str) -> tuple[str, int | None]:
    """``("month", None)`` or ``("rolling", 3600)``; raises :class:`InvalidInput` naming ``period``."""
    if period in PERIODS:
        return period, None
    match = _ROLLING.fullmatch(period) if isinstance(period, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise InvalidInput(
            f"expected one of run, hour, day, month, rolling:<seconds> (e.g. rolling:3600 or "
            f"rolling:1h), got {period!r}",
            field="period",
        )
    return "rolling", int(match.group(1)) * _UNITS[match.group(2) or "s"]


def timezone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """An IANA time zone by name, or :class:`InvalidInput` naming ``field``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {name!r}", field=field) from None


# (period, zone) -> (window start, window end, label): the label is recomputed only when ``now``
# leaves the window, which keeps datetime/zoneinfo work off the per-call path.
_WINDOWS: dict[tuple[str, str], tuple[float, float, str]] = {}


def period_bucket(period: str, now: float, tz: ZoneInfo) -> str:
    """The window ``now`` (epoch seconds) falls in, as text: ``2026-11``, ``2026-11-03``, ..."""
    return period_window(period, now, tz)[2]


def period_window(period: str, now: float, tz: ZoneInfo) -> tuple[float, float, str]:
    """``(start, end, label)`` of the calendar window ``now`` falls in (epoch seconds, end excluded)."""
    cache_key = (period, tz.key)
    hit = _WINDOWS.get(cache_key)
    if hit is not None and hit[0] <= now < hit[1]:
        return hit
    found = _WINDOWS[cache_key] = _window(period, now, tz)
    return found


def _window(period: str, now: float, tz: ZoneInfo) -> tuple[float, float, str]:
    local = datetime.fromtimestamp(now, tz)
    if period == "month":
        first = datetime(local.year, local.month, 1, tzinfo=tz)
        after = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
        return first.timestamp(), after.timestamp(), f"{local.year:04d}-{local.month:02d}"
    if period == "day":
        today = datetime(local.year, local.month, local.day, tzinfo=tz)
        tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
        return today.timestamp(), tomorrow.timestamp(), local.strftime("%Y-%m-%d")
    if period == "hour":
        start = now - (local.minute * 60 + local.second + local.microsecond / 1e6)
        # The offset keeps the two 01:00 hours of a DST fall-back apart.
        return start, start + 3600, local.strftime("%Y-%m-%dT%H%z")
    raise InvalidInput(f"period {period!r} has no calendar window", field="period")


def _escape(value: str) -> str:
    # Keys are ':'-separated; an id containing ':' must not collide with another key.
    return value.replace("%", "%25").replace(":", "%3A")


#: An amount as callers may give it: exact ``Decimal``, ``int`` or decimal string (never float).
Amount = Decimal | str | int


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Budget:
    """One policy: a hard ``limit`` and/or a ``soft`` limit on a scope's spend over a period.

    ``key`` pins the policy to one scope key (tenant ``"acme"``); without it the policy applies to
    every key of that scope, each with its own counter. ``period`` defaults to ``run`` (the
    lifetime of the key) for run/request scopes and ``month`` otherwise. ``timezone`` sets the
    calendar for day/month/hour periods (default: the tenant's, from the plans file, else UTC).
    ``on_soft`` is called with the soft-limit :class:`Decision`; ``downgrade`` maps models
    (``*`` globs carried over) for the scope's calls once its soft limit is crossed.

    A workspace, feature, user, run or request counter is kept per tenant (two tenants' users
    named ``alice`` have one each, and no tenant can spend another's by claiming the id); with
    ``shared=True`` it is kept by the id alone, across tenants (a platform-wide feature cap).
    """

    limit: Decimal | None
    soft: Decimal | None
    scope: str
    period: str
    currency: str
    name: str | None
    on_soft: Callable[[Decision], object] | None
    downgrade: Mapping[str, str] | None
    key: str | None
    timezone: str | None
    guards: RunGuards | None
    shared: bool
    window: int | None
    _downgrades: DowngradeMap | None = field(repr=False)

    def __init__(
        self,
        limit: Amount | None = None,
        soft: Amount | None = None,
        *,
        scope: str = "run",
        period: str | None = None,
        currency: str = "USD",
        name: str | None = None,
        on_soft: Callable[[Decision], object] | None = None,
        downgrade: Mapping[str, str] | None = None,
        key: str | None = None,
        timezone: str | None = None,
        guards: RunGuards | None = None,
        shared: bool = False,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "limit", None if limit is None else to_money(limit, field="limit"))
        set_(self, "soft", None if soft is None else to_money(soft, field="soft"))
        values = {"scope": scope, "period": period, "currency": currency, "name": name, "on_soft": on_soft,
                  "downgrade": downgrade, "key": key, "timezone": timezone, "guards": guards,
                  "shared": shared, "window": None, "_downgrades": None}  # fmt: skip
        for attribute, value in values.items():
            set_(self, attribute, value)
        self._validate(period)

    def _validate(self, requested_period: str | None) -> None:
        set_ = object.__setattr__
        if self.limit is None and self.soft is None and self.guards is None:
            raise InvalidInput("a budget needs a limit, a soft limit or guards", field="limit")
        if self.limit is not None and self.soft is not None and self.soft > self.limit:
            raise InvalidInput(f"soft limit {self.soft} is above the hard limit {self.limit}", field="soft")
        if self.scope not in SCOPES:
            raise InvalidInput(f"expected one of {', '.join(SCOPES)}, got {self.scope!r}", field="scope")
        period = requested_period or ("run" if self.scope in _LIFETIME_SCOPES else "month")
        kind, window = parse_period(period)
        if (kind == "run") != (self.scope in _LIFETIME_SCOPES):
            raise InvalidInput(
                f"period 'run' (the key's lifetime) goes with scope run or request only; "
                f"scope {self.scope!r} cannot use period {period!r}",
                field="period",
            )
        set_(self, "period", period)
        set_(self, "window", window)
        if self.guards is not None and not isinstance(self.guards, RunGuards):
            raise InvalidInput(f"expected a RunGuards, got {type(self.guards).__name__}", field="guards")
        if self.guards is not None and self.scope != "run":
            # Guards stop runs: on another scope they were accepted and never checked.
            raise InvalidInput(
                f"runaway guards stop runs: they need scope 'run', not {self.scope!r} (a tenant's cost "
                "rate is a CostRateLimit: BudgetEngine(rate_limit=...), the gateway's rate_limit)",
                field="guards",
            )
        if not isinstance(self.currency, str) or not _CURRENCY.fullmatch(self.currency):
            raise InvalidInput(
                f"expected an ISO 4217 code like 'USD', got {self.currency!r}", field="currency"
            )
        for name in ("name", "key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"expected a non-empty string, got {value!r}", field=name)
        if not isinstance(self.shared, bool):
            raise InvalidInput(f"expected true or false, got {self.shared!r}", field="shared")
        if self.shared and self.scope == "tenant":
            raise InvalidInput(
                "a tenant's counter is its own: shared is for the other scopes", field="shared"
            )
        if self.timezone is not None:
            timezone(self.timezone)
        if self.on_soft is not None and not callable(self.on_soft):
            raise InvalidInput("must be callable", field="on_soft")
        if self.downgrade is not None and self.soft is None:
            raise InvalidInput(
                "a downgrade map applies once the soft limit is reached: set soft", field="downgrade"
            )
        if self.downgrade is not None:
            set_(self, "_downgrades", DowngradeMap(self.downgrade))
            set_(self, "downgrade", MappingProxyType(dict(self.downgrade)))

    @property
    def period_kind(self) -> str:
        """``run``, ``hour``, ``day``, ``month`` or ``rolling``."""
        return "rolling" if self.window is not None else str(self.period)

    @property
    def downgrades(self) -> DowngradeMap | None:
        return self._downgrades

    def scope_key(self, scope: Scope) -> str | None:
        """The scope key this policy counts for the call, or ``None`` if it does not apply."""
        value = scope.key_for(self.scope)
        if value is None or (self.key is not None and value != self.key):
            return None
        return value

    def counter_key(self, value: str, now: float, tz: ZoneInfo, tenant: str | None = None) -> str:
        """The store key of this policy's counter for scope key ``value`` at time ``now``: of the
        call's ``tenant`` too unless the scope is the tenant or the policy is ``shared``, and of the
        calendar ``tz`` unless it is UTC (a day in Auckland is not a day in UTC)."""
        return self.counter(value, now, tz, tenant)[0]

    def counter(
        self, value: str, now: float, tz: ZoneInfo, tenant: str | None = None
    ) -> tuple[str, float | None]:
        """:meth:`counter_key` and the end of its calendar window (epoch seconds), after which
        admission never counts on it again; ``None`` for a run's or a rolling window's counter."""
        if tenant is None or self.scope == "tenant" or self.shared:
            base = f"{self.scope}:{_escape(value)}"
        else:
            base = f"{self.scope}:{_escape(tenant)}:{_escape(value)}"
        kind = self.period_kind
        if kind == "run":
            return base, None
        if kind == "rolling":
            return f"{base}:rolling:{self.window}", None
        _, end, label = period_window(kind, now, tz)
        bucket = f"{base}:{kind}:{label}"
        return (bucket if tz.key == "UTC" else f"{bucket}:{tz.key}"), end

    def describe(self) -> str:
        """``monthly``, ``daily``, ``rolling 1h``... for messages."""
        kind = self.period_kind
        if kind == "rolling":
            seconds = int(self.window or 0)
            for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
                if seconds % size == 0:
                    return f"rolling {seconds // size}{unit}"
            return f"rolling {seconds}s"
        return {"run": "", "hour": "hourly", "day": "daily", "month": "monthly"}[kind]
