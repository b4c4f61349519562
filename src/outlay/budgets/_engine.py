"""``BudgetEngine``: admission (reserve, settle, release), soft/hard actions, guards, entitlements.

Order of checks in :meth:`BudgetEngine.reserve`: runaway guards of the run chain, the tenant's
cost rate, then every applicable policy in one atomic store reservation. Whatever refuses records a
:class:`Decision` and raises; nothing taken by an earlier step is left behind.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import uuid_utils

from outlay._errors import BudgetExceeded, ConfigError, InvalidInput, NotEntitled, RunStopped, Throttled
from outlay._money import MONEY_CONTEXT, ZERO, to_money

from ._decision import Decision, DecisionSink, format_money
from ._guards import CostRateLimit, RunGuards, TokenBuckets
from ._plans import Plans
from ._policy import Budget, Scope, timezone
from ._runs import RunBook, RunInfo
from ._store import BudgetStore, InMemoryBudgetStore, KeyLimit, KeyStatus

__all__ = ["BudgetEngine", "BudgetStatus", "Reservation"]

_log = logging.getLogger("outlay.budgets")
_UTC: Final = ZoneInfo("UTC")
_REMEMBERED: Final = 100_000  # soft-limit counters already told, unsettled holds under no budget
_add: Final = MONEY_CONTEXT.add
_sub: Final = MONEY_CONTEXT.subtract
#: A policy applied to a call: (policy, scope key, counter key, end of the counter's window or None).
_Applied = tuple[Budget, str, str, float | None]


@dataclass(frozen=True, slots=True, eq=False)
class Reservation:
    """A hold on budget for one call; give it back to ``settle`` (or ``release`` on failure)."""

    id: str
    estimate: Decimal
    keys: tuple[KeyLimit, ...]
    policies: tuple[tuple[Budget, str, str], ...]  # (policy, scope key, counter key)
    scope: Scope
    runs: tuple[str, ...]
    model: str | None
    currency: str
    #: The counters as the store left them when it admitted this hold (spent, reserved incl. it).
    admitted: tuple[KeyStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One policy's counter for one scope key, now."""

    budget: Budget
    key: str
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal | None:
        """What may still be reserved under the hard limit (``None`` without one)."""
        if self.budget.limit is None:
            return None
        return max(ZERO, _sub(_sub(self.budget.limit, self.spent), self.reserved))


def _subject(policy: Budget, value: str) -> str:
    return "this run" if policy.scope == "run" else f"{policy.scope} {value}"


class BudgetEngine:
    """Enforces budgets. ``store`` defaults to an :class:`InMemoryBudgetStore`; every decision goes
    to ``decision_sink``; ``clock`` defaults to the store's (tests inject one)."""

    def __init__(
        self,
        store: BudgetStore | None = None,
        *,
        policies: Iterable[Budget] = (),
        decision_sink: DecisionSink | None = None,
        plans: Plans | None = None,
        rate_limit: CostRateLimit | None = None,
        rate_limits: Mapping[str, CostRateLimit] | None = None,
        guards: RunGuards | None = None,
        reservation_ttl: float = 300.0,
        default_timezone: str = "UTC",
    ) -> None:
        self.store = store if store is not None else InMemoryBudgetStore()
        self.clock = self.store.clock
        self._policies: tuple[Budget, ...] = ()
        for policy in policies:
            self.add_policy(policy)
        # Checked here, or a wrong type (a plans file's path, a rate as a string) surfaced as an
        # AttributeError in the first call that reached it.
        if decision_sink is not None and not callable(decision_sink):
            raise InvalidInput(
                f"expected a callable, got {type(decision_sink).__name__}", field="decision_sink"
            )
        if plans is not None and not isinstance(plans, Plans):
            raise InvalidInput(
                f"expected a Plans (budgets.load_plans(path)), got {type(plans).__name__}", field="plans"
            )
        if guards is not None and not isinstance(guards, RunGuards):
            raise InvalidInput(f"expected a RunGuards, got {type(guards).__name__}", field="guards")
        if rate_limit is not None and not isinstance(rate_limit, CostRateLimit):
            raise InvalidInput(
                f"expected a CostRateLimit, got {type(rate_limit).__name__}", field="rate_limit"
            )
        if rate_limits is not None and not isinstance(rate_limits, Mapping):
            raise InvalidInput(
                f"expected a mapping of tenant -> CostRateLimit, got {type(rate_limits).__name__}",
                field="rate_limits",
            )
        for tenant, limit in (rate_limits or {}).items():
            if not isinstance(tenant, str) or not isinstance(limit, CostRateLimit):
                raise InvalidInput(
                    f"expected a tenant name -> CostRateLimit, got {tenant!r}: {type(limit).__name__}",
                    field=f"rate_limits.{tenant}",
                )
        self.decision_sink = decision_sink
        self.plans = plans
        self._rate_limit = rate_limit
        self._rate_limits = dict(rate_limits or {})
        self._buckets = TokenBuckets()
        self._guards = guards
        if not reservation_ttl > 0:
            raise InvalidInput(f"must be positive, got {reservation_ttl!r}", field="reservation_ttl")
        self._ttl = float(reservation_ttl)
        self._tz = timezone(default_timezone, field="default_timezone")
        self.runs = RunBook()
        # Both bounded (oldest forgotten first): a soft counter per period and key, and the holds
        # of calls under no budget that were never settled (a crashed caller) would grow forever.
        self._soft_seen: OrderedDict[str, float] = OrderedDict()  # -> when it was announced
        self._soft_lock = threading.Lock()
        # Calls no policy applied to hold nothing in the store; this set makes their settle and
        # release idempotent too (a repeated settle must not count a run's spend twice).
        self._keyless: OrderedDict[str, None] = OrderedDict()
        self._keyless_lock = threading.Lock()
        self._bad_downgrades: set[tuple[str, str]] = set()  # pairs already logged as refused

    # --- configuration ----------------------------------------------------------------------

    def add_policy(self, policy: Budget) -> None:
        if not isinstance(policy, Budget):
            raise InvalidInput(f"expected a Budget, got {type(policy).__name__}", field="policy")
        self._policies = (*self._policies, policy)

    @property
    def policies(self) -> tuple[Budget, ...]:
        return self._policies

    def _zone(self, policy: Budget, tenant: str | None) -> ZoneInfo:
        if policy.timezone is not None:
            return ZoneInfo(policy.timezone)
        if tenant is not None and self.plans is not None and tenant in self.plans.timezones:
            return ZoneInfo(self.plans.timezones[tenant])
        return self._tz

    def _scoped(self, sc: Scope, budgets: Iterable[Budget], now: float) -> list[_Applied]:
        found: list[_Applied] = []
        for policy in budgets:
            if not isinstance(policy, Budget):
                raise InvalidInput(f"expected a Budget, got {type(policy).__name__}", field="also")
            value = policy.scope_key(sc)
            if value is None:
                raise InvalidInput(f"the scope has no {policy.scope} to apply this budget to", field="also")
            found.append(
                (policy, value, *policy.counter(value, now, self._zone(policy, sc.tenant), sc.tenant))
            )
        return found

    def _applicable(
        self, sc: Scope, runs: Sequence[str], extra: Iterable[Budget], now: float
    ) -> list[_Applied]:
        """``(policy, scope key, counter key, end of its window or None)`` of each policy that applies."""
        found: list[_Applied] = []
        for policy in self._policies:
            value = policy.scope_key(sc)
            if value is not None:
                found.append(
                    (policy, value, *policy.counter(value, now, self._zone(policy, sc.tenant), sc.tenant))
                )
        for policy in extra:
            value = policy.scope_key(sc)
            if value is None:
                raise InvalidInput(f"the call has no {policy.scope} to apply this budget to", field="budgets")
            found.append(
                (policy, value, *policy.counter(value, now, self._zone(policy, sc.tenant), sc.tenant))
            )
        for run_id in runs:
            info = self.runs.get(run_id)
            if info is not None and info.budget is not None and info.budget.scope == "run":
                found.append((info.budget, run_id, *info.budget.counter(run_id, now, self._tz)))
        return found

    # --- decisions ----------------------------------------------------------------------------

    def _decide(self, kind: str, message: str, **fields: Any) -> Decision:
        decision = Decision(
            kind=kind, message=message, time=datetime.fromtimestamp(self.clock(), UTC), **fields
        )
        if self.decision_sink is not None:
            try:
                self.decision_sink(decision)
            except Exception:  # the decision stands even if recording it failed; say so loudly
                _log.exception("outlay: the decision sink failed for %s", decision.kind)
        return decision

    # --- admission ----------------------------------------------------------------------------

    def reserve(
        self,
        scope: object,
        estimate: object,
        *,
        budgets: Iterable[Budget] = (),
        also: Iterable[tuple[Scope, Iterable[Budget]]] = (),
        model: str | None = None,
        fingerprint: str | None = None,
        currency: str = "USD",
        ttl: float | None = None,
    ) -> Reservation:
        """Hold ``estimate`` on every budget that applies to ``scope`` (a Scope, mapping or
        CostContext), or raise BudgetExceeded / RunStopped / Throttled and hold nothing.

        ``also``: ``(scope, budgets)`` pairs counted for another scope in the same hold — all or
        nothing, one store operation (e.g. a virtual key's per-feature budget, whose counter is
        qualified by the tenant)."""
        sc = Scope.of(scope)
        amount = to_money(estimate, field="estimate")
        now = self.clock()
        runs = tuple(self.runs.chain(sc.runs or ((sc.run,) if sc.run else ())))
        rid = str(uuid_utils.uuid7())
        deadline = now + (self._ttl if ttl is None else ttl)
        # Counts the call if it passes (and what it holds, under a cost-velocity guard).
        counted = self._check_guards(sc, runs, amount, fingerprint, now, (rid, deadline, amount))
        try:
            return self._reserve(sc, amount, runs, budgets, also, model, fingerprint, currency, ttl, now, rid)
        except BaseException:
            with self.runs.lock:  # refused after all: it was not a call the run made
                for info in counted:
                    info.guards.uncount(fingerprint, rid)
            raise

    def _reserve(
        self,
        sc: Scope,
        amount: Decimal,
        runs: tuple[str, ...],
        budgets: Iterable[Budget],
        also: Iterable[tuple[Scope, Iterable[Budget]]],
        model: str | None,
        fingerprint: str | None,
        currency: str,
        ttl: float | None,
        now: float,
        rid: str,
    ) -> Reservation:
        policies = self._applicable(sc, runs, budgets, now)
        for other, other_budgets in also:
            if not isinstance(other, Scope):
                raise InvalidInput(f"expected a Scope, got {type(other).__name__}", field="also")
            policies.extend(self._scoped(other, other_budgets, now))
        keys: dict[str, KeyLimit] = {}
        for policy, _, counter, until in policies:
            if policy.currency != currency:
                raise InvalidInput(
                    f"budget {policy.name or counter!r} is in {policy.currency}, the call in {currency}",
                    field="currency",
                )
            known = keys.get(counter)
            limit = policy.limit
            if known is not None and known.limit is not None and (limit is None or known.limit < limit):
                limit = known.limit
            # until: the store drops the counter a retention after its calendar window ended
            keys[counter] = KeyLimit(counter, limit, policy.window, until)
        rate = self._rate_for(sc.tenant)
        if rate is not None and sc.tenant is not None:
            wait = self._buckets.take(sc.tenant, rate, amount, now)
            if wait is not None:
                message = (
                    f"tenant {sc.tenant} is spending faster than its limit of "
                    f"{format_money(rate.rate)} per {rate.per:g}s; retry in {wait:.1f}s"
                )
                self._decide("throttled", message, tenant=sc.tenant, estimate=amount, model=model,
                             run_id=sc.run, retry_after=wait)  # fmt: skip
                raise Throttled(message, retry_after=wait, tenant=sc.tenant)
        reservation = Reservation(
            rid, amount, tuple(keys.values()), tuple(p[:3] for p in policies), sc, runs, model, currency
        )
        if keys:
            try:
                result = self.store.reserve(
                    reservation.id, reservation.keys, amount, self._ttl if ttl is None else ttl
                )
            except BaseException:  # the store failed (unreachable, say): nothing was spent
                if rate is not None and sc.tenant is not None:
                    self._buckets.adjust(sc.tenant, rate, -amount, now)
                raise
            if not result.ok:
                if rate is not None and sc.tenant is not None:
                    self._buckets.adjust(sc.tenant, rate, -amount, now)
                assert result.denied is not None
                raise self._denied(reservation, result.statuses[result.denied])
            reservation = replace(reservation, admitted=result.statuses)
            try:
                self._check_soft(reservation, result.statuses)
            except BaseException:
                self.release(reservation)  # an on_soft hook refused the call (escalation)
                raise
        else:
            with self._keyless_lock:
                self._keyless[reservation.id] = None
                if len(self._keyless) > _REMEMBERED:
                    self._keyless.popitem(last=False)
        return reservation

    def _rate_for(self, tenant: str | None) -> CostRateLimit | None:
        if tenant is not None and tenant in self._rate_limits:
            return self._rate_limits[tenant]
        return self._rate_limit

    def _guarded(self, tenant: str | None, run_id: str) -> tuple[RunInfo | None, RunGuards | None]:
        """A run's state and guards for a call of ``tenant``. A run this process did not open (its
        id came in a gateway's X-Outlay-Run-Id header, or is an extracted parent's) has state only
        when guards apply to it — a budgets file's ``run`` policy, the engine's — kept per tenant."""
        info = self.runs.get(run_id)
        if info is not None:
            return info, self._guards_of(info, run_id)
        guards = self._policy_guards(run_id)
        return (None, None) if guards is None else (self.runs.remote(tenant, run_id), guards)

    def _check_guards(
        self,
        sc: Scope,
        runs: Sequence[str],
        amount: Decimal,
        fp: str | None,
        now: float,
        hold: tuple[str, float, Decimal],
    ) -> list[RunInfo]:
        """Raise RunStopped if a run's guards stop this call; else count it on every run, in the
        same critical section, so that concurrent calls cannot all pass a limit of N. Returns the
        runs it was counted on."""
        with self.runs.lock:
            counted: list[tuple[RunInfo, bool]] = []  # (run, whether a velocity guard counts its hold)
            for run_id in runs:
                info, guards = self._guarded(sc.tenant, run_id)
                if info is None:
                    continue
                counted.append((info, guards is not None and guards.max_cost_per_minute is not None))
                if guards is None:
                    continue
                stop = info.guards.check(guards, fp, amount, now)
                if stop is None:
                    continue
                first = info.guards.stopped is None
                info.guards.stopped = stop
                reason, message = stop
                if first:
                    self._decide("run_stopped", message, tenant=sc.tenant, scope="run", key=run_id,
                                 estimate=amount, run_id=run_id, reason=reason)  # fmt: skip
                raise RunStopped(message, reason=reason, run_id=run_id)
            for info, velocity in counted:
                info.guards.count(fp, hold if velocity else None)
            return [info for info, _ in counted]

    def _denied(self, reservation: Reservation, status: KeyStatus) -> BudgetExceeded:
        tightest = [(p, v) for p, v, c in reservation.policies if c == status.key and p.limit is not None]
        policy, value = min(tightest, key=lambda pv: pv[0].limit or ZERO)
        assert policy.limit is not None
        period = policy.describe()
        limit = f"{format_money(policy.limit, policy.currency)}{' ' + period if period else ''} budget"
        needs = f"this call needs up to {format_money(reservation.estimate, policy.currency)}"
        if policy.shared:
            # Every tenant's calls count here: what it has spent is not this caller's to read (the
            # decision is recorded under the caller's tenant, whose token reads its decisions).
            message = f"the shared {policy.scope} {value} {limit} (all tenants' calls) is used up; {needs}"
        else:
            message = (
                f"{_subject(policy, value)} has spent {format_money(status.spent, policy.currency)} of its "
                f"{limit}; {needs}"
            )
            if status.reserved:
                message += f" and {format_money(status.reserved, policy.currency)} is held by calls in flight"
        spent, reserved = (None, None) if policy.shared else (status.spent, status.reserved)
        self._decide("denied", message, tenant=reservation.scope.tenant, scope=policy.scope, key=status.key,
                     budget=policy.name, limit=policy.limit, spent=spent, reserved=reserved,
                     estimate=reservation.estimate, model=reservation.model,
                     run_id=reservation.scope.run)  # fmt: skip
        return BudgetExceeded(message, scope=policy.scope, key=status.key, limit=policy.limit,
                              spent=status.spent, reserved=status.reserved, estimate=reservation.estimate,
                              budget=policy.name, shared=policy.shared)  # fmt: skip

    def _check_soft(self, reservation: Reservation, statuses: Sequence[KeyStatus]) -> None:
        by_key = {s.key: s for s in statuses}
        for policy, value, counter in reservation.policies:
            status = by_key.get(counter)
            if policy.soft is None or status is None:
                continue
            # By what the policy is, not id(policy): a budget given per call is a new object each time
            # (and a freed one's id is reused), yet it is the same soft limit on the same counter.
            seen = f"{policy.name}|{policy.soft}|{counter}"
            if _add(status.spent, status.reserved) < policy.soft:
                continue
            now = self.clock()
            # Checked and marked in one step: two threads crossing the soft limit at once both
            # found it unannounced, and its on_soft hook ran twice.
            with self._soft_lock:
                told = self._soft_seen.get(seen)
                # A calendar period's next window is a new counter, announced anew; a rolling window
                # keeps its key, so it is announced again once the spend told of has left the window.
                if told is not None and (policy.window is None or now - told < policy.window):
                    continue
                self._soft_seen[seen] = now
                if len(self._soft_seen) > _REMEMBERED:
                    self._soft_seen.popitem(last=False)
            period = policy.describe()
            soft = f"{format_money(policy.soft, policy.currency)}{' (' + period + ')' if period else ''}"
            if policy.shared:  # (every tenant's spend: not the caller's to read, as in _denied)
                whose = f"the shared {policy.scope} {value} budget (all tenants' calls)"
                message = f"{whose} reached its soft limit {soft}"
            else:
                used = format_money(_add(status.spent, status.reserved), policy.currency)
                message = f"{_subject(policy, value)} reached its soft limit: {used} spent or held of {soft}"
            spent, reserved = (None, None) if policy.shared else (status.spent, status.reserved)
            decision = self._decide("soft_exceeded", message, tenant=reservation.scope.tenant,
                                    scope=policy.scope, key=counter, budget=policy.name, limit=policy.soft,
                                    spent=spent, reserved=reserved,
                                    estimate=reservation.estimate, model=reservation.model,
                                    run_id=reservation.scope.run)  # fmt: skip
            if policy.on_soft is not None:
                try:
                    policy.on_soft(decision)
                except BaseException:
                    with self._soft_lock:  # escalated: the next call asks the hook again
                        self._soft_seen.pop(seen, None)
                    raise

    def settle(self, reservation: Reservation, actual: object = None) -> Decimal:
        """Record the call's actual cost (the estimate when ``None``: unknown is not zero) and free
        the rest of the hold. Settling twice records once. Returns the cost recorded."""
        return self.settle_status(reservation, actual)[0]

    def settle_status(
        self, reservation: Reservation, actual: object = None
    ) -> tuple[Decimal, tuple[KeyStatus, ...]]:
        """:meth:`settle`, also returning the counters as the store left them (no second read),
        e.g. to tell a caller what it has left."""
        cost = reservation.estimate if actual is None else to_money(actual, field="actual")
        statuses: tuple[KeyStatus, ...] = ()
        if reservation.keys:
            result = self.store.settle(reservation.id, cost)
            statuses = result.statuses
            if not result.ok:
                return ZERO, statuses
        elif not self._finish_keyless(reservation):
            return ZERO, statuses
        tenant = reservation.scope.tenant
        rate = self._rate_for(tenant)
        now = self.clock()
        if rate is not None and tenant is not None:
            self._buckets.adjust(tenant, rate, _sub(cost, reservation.estimate), now)
        self.runs.add_spend(reservation.runs, cost)
        with self.runs.lock:
            for run_id in reservation.runs:
                info, guards = self._guarded(tenant, run_id)
                if info is not None:
                    info.guards.finish(reservation.id)
                if info is not None and guards is not None and guards.max_cost_per_minute is not None:
                    info.guards.recent.append((now, cost))
        if reservation.keys and cost > reservation.estimate:
            self._check_soft(reservation, statuses)
        return cost, statuses

    def release(self, reservation: Reservation) -> bool:
        """Give the hold back without spend (the call failed before costing anything)."""
        released = (
            self.store.release(reservation.id) if reservation.keys else self._finish_keyless(reservation)
        )
        tenant = reservation.scope.tenant
        rate = self._rate_for(tenant)
        if released and rate is not None and tenant is not None:
            self._buckets.adjust(tenant, rate, -reservation.estimate, self.clock())
        if released:
            with self.runs.lock:  # it holds nothing any more, for the runs' cost-velocity guards
                for run_id in reservation.runs:
                    info = self.runs.get(run_id) or self.runs.remote_known(tenant, run_id)
                    if info is not None:
                        info.guards.finish(reservation.id)
        return released

    def _finish_keyless(self, reservation: Reservation) -> bool:
        with self._keyless_lock:
            if reservation.id not in self._keyless:
                return False
            del self._keyless[reservation.id]
            return True

    def _guards_of(self, info: RunInfo | None, run_id: str) -> RunGuards | None:
        """The run's own budget's guards, else those of a ``run`` policy that applies to it (every
        run, or the one its ``key`` names: a budgets file's ``max_calls = ...``), else the engine's."""
        if info is None:
            return None
        if info.budget is not None and info.budget.guards is not None:
            return info.budget.guards
        return self._policy_guards(run_id)

    def _policy_guards(self, run_id: str) -> RunGuards | None:
        """The guards of a ``run`` policy that applies to ``run_id``, else the engine's."""
        for policy in self._policies:
            if policy.scope == "run" and policy.guards is not None and policy.key in (None, run_id):
                return policy.guards
        return self._guards

    # --- downgrade, status, entitlements, runs --------------------------------------------------

    def model_for(
        self,
        scope: object,
        requested_model: str,
        *,
        cost_of: Callable[[str], Decimal | None] | None = None,
    ) -> tuple[str, bool]:
        """The model to call: a cheaper one when a soft limit with a downgrade map was reached.

        ``cost_of(model)`` (the call's estimate on a model, ``None`` when it has no price) guards
        the map: a target with no price, or dearer than the requested model, is not switched to
        (a typo in the map must not make spend unknown); that is logged as an error once per pair.
        """
        sc = Scope.of(scope)
        now = self.clock()
        runs = self.runs.chain(sc.runs or ((sc.run,) if sc.run else ()))
        for policy, _, counter, _ in self._applicable(sc, runs, (), now):
            if policy.downgrades is None or policy.soft is None:
                continue
            status = self.store.status(counter, policy.window)
            if _add(status.spent, status.reserved) < policy.soft:
                continue
            target = policy.downgrades.apply(requested_model)
            if target is None or target == requested_model:
                continue
            if cost_of is not None and not self._cheaper(policy, requested_model, target, cost_of):
                continue
            message = f"{requested_model} downgraded to {target}: {counter} reached its soft limit"
            # A shared counter holds every tenant's spend: not the caller's to read (as in _denied).
            spent, reserved = (None, None) if policy.shared else (status.spent, status.reserved)
            self._decide("downgraded", message, tenant=sc.tenant, scope=policy.scope, key=counter,
                         budget=policy.name, limit=policy.soft, spent=spent, reserved=reserved,
                         model=requested_model, downgraded_to=target, run_id=sc.run)  # fmt: skip
            return target, True
        return requested_model, False

    def _cheaper(
        self, policy: Budget, requested: str, target: str, cost_of: Callable[[str], Decimal | None]
    ) -> bool:
        wanted, instead = cost_of(requested), cost_of(target)
        if instead is not None and (wanted is None or instead <= wanted):
            return True
        why = "has no price" if instead is None else f"costs more ({instead} vs {wanted} for this call)"
        if (requested, target) not in self._bad_downgrades:
            if len(self._bad_downgrades) >= _REMEMBERED:  # model names may come from clients
                self._bad_downgrades.clear()
            self._bad_downgrades.add((requested, target))
            _log.error(
                "outlay: budget %r maps %s to %s, which %s: not downgrading",
                policy.name or policy.scope, requested, target, why,
            )  # fmt: skip
        return False

    def status(self, scope: object, budget: Budget) -> BudgetStatus:
        """``budget``'s counter for ``scope`` now (spent, reserved, remaining)."""
        sc = Scope.of(scope)
        value = budget.scope_key(sc)
        if value is None:
            raise InvalidInput(f"the scope has no {budget.scope} for this budget", field="scope")
        counter = budget.counter_key(value, self.clock(), self._zone(budget, sc.tenant), sc.tenant)
        st = self.store.status(counter, budget.window)
        return BudgetStatus(budget, counter, st.spent, st.reserved)

    def check_entitlement(self, scope: object, requires: str) -> None:
        """Raise :class:`NotEntitled` (and record it) if the tenant's tier is below ``requires``."""
        sc = Scope.of(scope)
        if self.plans is None:
            raise ConfigError(f"requires={requires!r} needs a plans file; none is configured", field="plans")
        if self.plans.allows(sc.tenant, requires):
            return
        tier = self.plans.tier_of(sc.tenant)
        who = f"tenant {sc.tenant}" if sc.tenant else "a call with no tenant"
        message = (
            f"{who} is on the {tier} plan; this needs {requires} or above"
            if tier
            else f"{who} has no plan; this needs {requires} or above"
        )
        self._decide("not_entitled", message, tenant=sc.tenant, scope="tenant", key=sc.tenant,
                     run_id=sc.run, reason=requires)  # fmt: skip
        raise NotEntitled(message, tenant=sc.tenant, tier=tier, requires=requires)

    def start_run(
        self,
        run_id: str,
        *,
        parent_id: str | None = None,
        budget: Budget | None = None,
        tenant: str | None = None,
    ) -> None:
        """Track a run: its budget (scope ``run``) and guards apply to it and its children;
        ``tenant`` (its context's) names the counters of the ``run`` policies that apply to it."""
        if budget is not None and (not isinstance(budget, Budget) or budget.scope != "run"):
            raise InvalidInput("a run's budget must be a Budget with scope='run'", field="budget")
        self.runs.start(run_id, parent_id, budget, tenant)

    def end_run(self, run_id: str, run: object | None = None) -> None:
        """The run ended; its budget binds what it started for as long as ``run`` (its ``Run``
        object, which the contexts of its tasks and child runs hold) is alive."""
        self.runs.end(run_id, run)

    def run_spent(self, run_id: str) -> Decimal:
        """Settled spend of the run and its children, in this process."""
        return self.runs.spent(run_id)

    def run_status(self, run_id: str) -> BudgetStatus | None:
        """The counter of the tightest hard-limited run budget over ``run_id`` — its own or an
        enclosing run's, since a child's calls count on its parents' budgets too — else of its own
        budget (a soft limit only), else ``None``."""
        found = self._tightest_run_budget(run_id)
        return None if found is None else found[1]

    def _run_budgets(self, run_id: str) -> Iterator[tuple[str, BudgetStatus]]:
        """Every budget that counts the calls of ``run_id``: its own and its enclosing runs'
        budgets, and the ``run`` policies (a budgets file's) on ``run_id`` itself, which count a
        call on its innermost run only."""
        for owner in self.runs.chain((run_id,)):
            info = self.runs.get(owner)
            if info is not None and info.budget is not None:
                yield owner, self.status(Scope(run=owner), info.budget)
        own = self.runs.get(run_id)
        if own is None:
            return
        scope = Scope(tenant=own.tenant, run=run_id)
        for policy in self._policies:
            if policy.scope == "run" and policy.scope_key(scope) is not None:
                yield run_id, self.status(scope, policy)

    def _tightest_run_budget(self, run_id: str) -> tuple[str, BudgetStatus] | None:
        tightest: tuple[str, BudgetStatus] | None = None
        for owner, status in self._run_budgets(run_id):
            left = status.remaining
            if left is None:
                if tightest is None and owner == run_id:
                    tightest = (owner, status)
            elif tightest is None or tightest[1].remaining is None or left < tightest[1].remaining:
                tightest = (owner, status)
        return tightest

    def check_run(self, run_id: str, need: object = ZERO) -> None:
        """Cooperative checkpoint: raise if the run (or a run it is part of) was stopped, or the
        run budgets over it cannot pay ``need`` (or are used up). Agent loops call this between
        steps to stop cleanly."""
        amount = to_money(need, field="need")
        for owner in self.runs.chain((run_id,)):
            info = self.runs.get(owner)
            if info is not None and info.guards.stopped is not None:
                reason, message = info.guards.stopped
                raise RunStopped(message, reason=reason, run_id=owner)
        found = self._tightest_run_budget(run_id)
        if found is None or found[1].budget.limit is None:
            return
        owner, status = found
        remaining = status.remaining
        assert remaining is not None
        if remaining > amount or (amount and remaining == amount):
            return
        policy = status.budget
        assert policy.limit is not None
        whose = "this run" if owner == run_id else f"enclosing run {owner}"
        message = (
            f"{whose} has spent {format_money(status.spent, policy.currency)} of its "
            f"{format_money(policy.limit, policy.currency)} budget"
        )
        if status.reserved:
            message += f" and {format_money(status.reserved, policy.currency)} is held by calls in flight"
        if amount:
            message += f"; the next step needs up to {format_money(amount, policy.currency)}"
        raise BudgetExceeded(message, scope="run", key=status.key, limit=policy.limit, spent=status.spent,
                             reserved=status.reserved, estimate=amount, budget=policy.name)  # fmt: skip
