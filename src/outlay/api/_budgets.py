"""Budget status: every budget that applies to a tenant, with its counter as admission sees it now.

The policies and counters are the gateway's own, from the same configuration: the ``[[budget]]``
file (``$OUTLAY_BUDGETS_FILE``), the budgets virtual keys carry (the key store, ``$OUTLAY_KEYS_URL``)
and the budget store (``$OUTLAY_BUDGET_URL``, else ``budgets.db`` beside the key store, as the
gateway defaults). Each counter key is computed exactly as admission computes it (scope key, period
bucket in the engine's time zone), so spent and reserved are what the next reservation is checked
against.

Run and request budgets live as long as one run or request: they are not listed here (a run checks
its own with ``run.remaining`` / ``run.check()``). Workspace, feature and user budgets are listed
when the request names the workspace, feature or user: the ledger cannot tell which a tenant uses.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput, NotFound
from outlay._money import MONEY_CONTEXT, money_str
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetStatus,
    BudgetStore,
    load_plans,
    load_policies,
    open_budget_store,
)
from outlay.budgets._policy import _window as calendar_window  # the engine's own window arithmetic
from outlay.keys import KeyStore, VirtualKey, default_keys_url, open_key_store

from ._endpoint import Call, Endpoint
from ._openapi import PARAMETERS
from ._query import tenant_known

__all__ = [
    "ENDPOINTS",
    "POLICIES_ENV",
    "BudgetView",
    "KeySource",
    "Policies",
    "StoreSource",
    "default_store_url",
    "open_budget_view",
    "register",
]

#: The policies file, named as the gateway names it: one configuration for every process.
POLICIES_ENV: Final = "OUTLAY_BUDGETS_FILE"
_PLANS_ENV: Final = "OUTLAY_PLANS_FILE"
_NARROWING: Final = ("workspace", "feature", "user")
_LIFETIME: Final = ("run", "request")
NOT_CONFIGURED: Final = (
    "no budget policies are configured: start the API with --budgets FILE (or set "
    f"{POLICIES_ENV}), or give it the gateway's key store (OUTLAY_KEYS_URL) for key budgets"
)


@dataclass(frozen=True, slots=True)
class _Applied:
    """One policy as it applies to one tenant's calls."""

    policy: Budget
    tenant: str
    value: str  # the scope key the counter is kept for
    calendar_tenant: str | None  # whose time zone admission uses (None: the engine's default)
    source: str  # "policies" (the file) or "key" (a virtual key's budget)
    key_id: str | None
    shared: bool  # kept by the id alone (shared=True): every tenant's calls with that id count on it


class BudgetView:
    """The budget policies the API reports on and the engine whose store holds their counters.

    ``closing`` are closed by :meth:`close` (what was opened for the view); objects passed in by the
    caller are not.
    """

    def __init__(
        self,
        engine: BudgetEngine | None = None,
        policies: Iterable[Budget] = (),
        keys: KeyStore | None = None,
        *,
        closing: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.policies: tuple[Budget, ...] = tuple(policies)
        for policy in self.policies:
            if not isinstance(policy, Budget):
                raise ConfigError(f"expected Budget policies, got {type(policy).__name__}", field="budgets")
        self.keys = keys
        self.engine = engine if engine is not None else BudgetEngine()
        self._closing = tuple(closing)

    @property
    def configured(self) -> bool:
        """Whether any budget can exist: policies, or a key store whose keys may carry budgets."""
        return bool(self.policies) or self.keys is not None

    def close(self) -> None:
        for close in self._closing:
            close()

    def _key_budgets(self, tenant: str | None) -> dict[str, list[VirtualKey]]:
        found: dict[str, list[VirtualKey]] = {}
        if self.keys is None:
            return found
        for key in self.keys.list_keys(tenant=tenant):
            if key.policies and not key.revoked:  # a revoked key's calls are refused anyway
                found.setdefault(key.tenant, []).append(key)
        return found

    def tenants(self, recorded: Iterable[str]) -> list[str]:
        """Tenants to list for an admin: those with events, and those a policy or key names."""
        named = {p.key for p in self.policies if p.scope == "tenant" and p.key is not None}
        return sorted({*recorded, *named, *self._key_budgets(None)})

    def names(self, tenant: str) -> bool:
        """Whether a policy or a key names ``tenant`` (it may have budgets before any event)."""
        if any(p.scope == "tenant" and p.key == tenant for p in self.policies):
            return True
        return bool(self._key_budgets(tenant))

    def omitted(self, narrowed: Mapping[str, str | None]) -> dict[str, int]:
        """Policies not evaluated, by scope: per run/request, or on an id the request did not name."""
        counts: dict[str, int] = {}
        for policy in self.policies:
            if policy.scope in _LIFETIME or (
                policy.scope in _NARROWING and narrowed.get(policy.scope) is None
            ):
                counts[policy.scope] = counts.get(policy.scope, 0) + 1
        return counts

    def _applied(
        self, tenant: str, narrowed: Mapping[str, str | None], keys: Sequence[VirtualKey]
    ) -> list[_Applied]:
        found: list[_Applied] = []
        for policy in self.policies:
            if policy.scope == "tenant":
                if policy.key is None or policy.key == tenant:
                    found.append(_Applied(policy, tenant, tenant, tenant, "policies", None, False))
            elif policy.scope in _NARROWING:
                value = narrowed.get(policy.scope)
                if value is not None and (policy.key is None or policy.key == value):
                    found.append(_Applied(policy, tenant, value, tenant, "policies", None, policy.shared))
        for key in keys:
            for policy in key.policies:
                if policy.scope == "tenant":
                    found.append(_Applied(policy, tenant, tenant, tenant, "key", key.id, False))
                elif key.feature_key is not None:
                    # The gateway holds a key's feature budget under
                    # Scope(tenant=<tenant>, feature=<tenant>/<feature>): a counter of the tenant's own.
                    found.append(_Applied(policy, tenant, key.feature_key, tenant, "key", key.id, False))
        return found

    def status(
        self, tenants: Sequence[str], narrowed: Mapping[str, str | None]
    ) -> tuple[float, list[dict[str, Any]]]:
        """``(now, rows)``: a row per applicable policy of each tenant, its counter read now."""
        engine = self.engine
        now = engine.clock()
        keys = self._key_budgets(tenants[0] if len(tenants) == 1 else None)
        rows = [
            _row(engine, applied, now)
            for tenant in tenants
            for applied in self._applied(tenant, narrowed, keys.get(tenant, ()))
        ]
        return now, rows


def _row(engine: BudgetEngine, applied: _Applied, now: float) -> dict[str, Any]:
    policy = applied.policy
    # The engine's own choice of calendar (policy zone, else the tenant's plan zone, else its
    # default), so the bucket is the one admission counts on.
    zone = engine._zone(policy, applied.calendar_tenant)
    counter = policy.counter_key(applied.value, now, zone, applied.tenant)
    found = engine.store.status(counter, policy.window)
    status = BudgetStatus(policy, counter, found.spent, found.reserved)
    used = MONEY_CONTEXT.add(status.spent, status.reserved)
    kind = policy.period_kind
    if kind == "rolling":
        start, end, bucket = now - float(policy.window or 0), now, None
    else:
        start, end, label = calendar_window(kind, now, zone)
        bucket = label
    remaining = status.remaining
    return {
        "tenant": applied.tenant,
        "name": policy.name,
        "source": applied.source,
        "key_id": applied.key_id,
        "scope": policy.scope,
        "scope_key": applied.value,
        "shared": applied.shared,
        "counter": counter,
        "period": policy.period,
        "bucket": bucket,
        "window": {
            "from": datetime.fromtimestamp(start, zone).isoformat(),
            "to": datetime.fromtimestamp(end, zone).isoformat(),
        },
        "timezone": zone.key,
        "currency": policy.currency,
        "limit": None if policy.limit is None else money_str(policy.limit),
        "soft": None if policy.soft is None else money_str(policy.soft),
        "spent": money_str(status.spent),
        "reserved": money_str(status.reserved),
        "remaining": None if remaining is None else money_str(remaining),
        "soft_reached": None if policy.soft is None else used >= policy.soft,
        "hard_reached": None if policy.limit is None else used >= policy.limit,
    }


# --- configuration -------------------------------------------------------------------------------

#: What ``create_app(budgets=, budget_store=, keys=)`` accept.
Policies = str | os.PathLike[str] | Iterable[Budget]
StoreSource = BudgetEngine | BudgetStore | str
KeySource = KeyStore | str


def default_store_url(keys_url: str) -> str:
    """The gateway's default budget store: ``budgets.db`` beside a SQLite key store, else in ``.outlay/``."""
    if keys_url == "memory://" or "://" in keys_url.removeprefix("sqlite:"):
        return str(Path(".outlay") / "budgets.db")
    target = keys_url.removeprefix("sqlite:")
    target = target[2:] if target.startswith("//") else target
    return str(Path(target).expanduser().parent / "budgets.db")


def _store(url: str) -> BudgetStore:
    if not url.startswith(("memory:", "redis://", "rediss://", "unix://")):
        target = url.removeprefix("sqlite:")
        target = target[2:] if target.startswith("//") else target
        if "://" not in target:
            Path(target).expanduser().parent.mkdir(parents=True, exist_ok=True)  # as the gateway does
    return open_budget_store(url)


def _policies(budgets: Policies) -> list[Budget]:
    if isinstance(budgets, str | os.PathLike):
        return load_policies(os.fspath(budgets))
    if isinstance(budgets, Budget | BudgetEngine | BudgetStore):
        raise ConfigError(
            f"expected a policies file or a list of Budget, got {type(budgets).__name__}", field="budgets"
        )
    return list(budgets)


def open_budget_view(
    budgets: Policies | None = None,
    budget_store: StoreSource | None = None,
    keys: KeySource | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> BudgetView:
    """The view ``create_app`` reports budgets from.

    ``budgets``: a policies file or a list of :class:`Budget` (default: ``$OUTLAY_BUDGETS_FILE``, or
    the policies of a ``budget_store`` engine). ``budget_store``: a :class:`BudgetEngine` (its store,
    plans and time zone), a :class:`BudgetStore` or a URL (default ``$OUTLAY_BUDGET_URL``, else
    ``budgets.db`` beside the key store, as the gateway defaults). ``keys``: the gateway's key store
    or its URL, for key budgets (default ``$OUTLAY_KEYS_URL``; none without it). With no policies
    and no key store, nothing is opened and the view says none are configured.
    """
    env = os.environ if environ is None else environ
    engine = budget_store if isinstance(budget_store, BudgetEngine) else None
    closing: list[Callable[[], None]] = []
    try:
        if budgets is not None:
            policies = _policies(budgets)
        elif engine is not None and engine.policies:
            policies = list(engine.policies)
        else:
            path = env.get(POLICIES_ENV)
            policies = load_policies(path) if path else []
        key_store: KeyStore | None = keys if isinstance(keys, KeyStore) else None
        keys_url = keys if isinstance(keys, str) else env.get("OUTLAY_KEYS_URL")
        if key_store is None and keys_url:
            key_store = open_key_store(keys_url)
            closing.append(key_store.close)
        if engine is None and (policies or key_store is not None or budget_store is not None):
            if isinstance(budget_store, BudgetStore):
                store = budget_store
            else:
                default = default_store_url(keys_url or default_keys_url(dict(env)))
                url = budget_store if isinstance(budget_store, str) else None
                store = _store(url or env.get("OUTLAY_BUDGET_URL") or default)
                closing.append(store.close)
            plans = env.get(_PLANS_ENV)  # tenants' time zones decide their calendar buckets
            engine = BudgetEngine(store, plans=load_plans(plans) if plans else None)
        return BudgetView(engine, policies, key_store, closing=closing)
    except BaseException:
        for close in closing:
            close()
        raise


# --- the endpoint --------------------------------------------------------------------------------

# A handler gets a Call, which carries no app state but the app's catch-up lock: one per app, shared
# by the API routes and the dashboard. The view is found by it (weakly: it goes with its app).
_VIEWS: weakref.WeakKeyDictionary[threading.Lock, BudgetView] = weakref.WeakKeyDictionary()
_VIEWS_LOCK: Final = threading.Lock()


def register(app_lock: threading.Lock, view: BudgetView) -> None:
    """Serve ``view`` to the requests of the app whose catch-up lock is ``app_lock``."""
    with _VIEWS_LOCK:
        _VIEWS[app_lock] = view


def _view(call: Call) -> BudgetView | None:
    with _VIEWS_LOCK:
        return _VIEWS.get(call.catch_up_lock)


def _recorded_tenants(call: Call) -> list[str]:
    rows = call.reports().ledger.rollup_totals(("tenant",), date(2000, 1, 1), date(2200, 1, 1))
    return [str(t.key[0]) for t in rows if t.key[0] is not None]


def budget_status(call: Call) -> dict[str, Any]:
    tenant = call.principal.scope_tenant(call.query.get("tenant"))
    narrowed = {name: call.query.get(name) for name in _NARROWING}
    for name, value in narrowed.items():
        if value is not None and tenant is None:
            raise InvalidInput("needs tenant= too: whose calls to evaluate", field=name)
    view = _view(call)
    if tenant is not None and call.principal.is_admin:
        named = view is not None and view.names(tenant)
        if not named and not tenant_known(call.reports().ledger, tenant):
            raise NotFound(f"tenant {tenant!r} has no events, no budget policy and no key", field="tenant")
    if view is None or not view.configured:
        now = datetime.now(UTC).isoformat()
        return {"configured": False, "message": NOT_CONFIGURED, "time": now, "tenant": tenant,
                "rows": [], "omitted": {}}  # fmt: skip
    tenants = [tenant] if tenant is not None else view.tenants(_recorded_tenants(call))
    now_ts, rows = view.status(tenants, narrowed)
    omitted = view.omitted(narrowed)
    if not call.principal.is_admin:
        # A counter kept by a feature/workspace/user id alone adds up every tenant's calls with that
        # id: its spend is not this tenant's to see (invariant 7). Admins see it, marked shared.
        hidden = sum(1 for row in rows if row["shared"])
        rows = [row for row in rows if not row["shared"]]
        if hidden:
            omitted["shared"] = hidden
    return {
        "configured": True,
        "time": datetime.fromtimestamp(now_ts, UTC).isoformat(),
        "tenant": tenant,
        "rows": rows,
        "omitted": omitted,
    }


for _name in ("workspace", "user"):
    PARAMETERS.setdefault(_name, (f"Budget status: also the budgets of this {_name}.", {"type": "string"}))

ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/budgets/status", budget_status,
             "Budget status now: each budget of a tenant with its spent, reserved and remaining",
             ("tenant", "workspace", "feature", "user"), tag="budgets", responses={404: "unknown tenant"}),
)  # fmt: skip
