"""Spikes (a tenant's or agent's daily cost against its own trailing baseline) and runaway runs
(runs whose rolled-up cost is far above the median run of the same agent).

Both compare known costs only and say how many events were unpriced: an unpriced event can hide a
spike, never create one. So a baseline day (or a run of the agent) with unpriced events counts as
unknown — as high as can be — in the median: the median is then an upper bound of the true one, and
a day or run over ``factor`` times it certainly is a spike or a runaway.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, money_str, to_money
from outlay.ledger import LedgerStore, parse_instant
from outlay.reporting import Reports

__all__ = ["RunawayRun", "Spike", "runaway_runs", "spikes"]

SPIKE_KEYS: Final = ("tenant", "agent")
_ZERO: Final = Decimal(0)
#: An unknown cost in a median: it can only raise the median, never lower it.
_UNKNOWN: Final = Decimal("Infinity")


@dataclass(frozen=True, slots=True)
class Spike:
    day: date
    by: str
    key: str
    tenant: str | None
    cost: Decimal
    baseline: Decimal
    unpriced_events: int

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            self.by: self.key,
            **({"tenant": self.tenant} if self.by != "tenant" else {}),
            "cost": money_str(self.cost),
            "baseline": money_str(self.baseline),
            "unpriced_events": self.unpriced_events,
        }


_HIGHEST: Final = Decimal(10) ** 12  # far beyond any sensible factor or amount; keeps products exact


def _check(name: str, value: object, low: Decimal) -> Decimal:
    """``value`` as a ``Decimal`` from ``low`` to ``_HIGHEST``: a ``Decimal``, an ``int`` or a decimal
    string (``factor=3`` is as good as ``Decimal(3)``); a float, having lost its exact value, is refused."""
    number = to_money(value, field=name, allow_negative=True)
    if not low <= number <= _HIGHEST:
        raise InvalidInput(f"must be a number from {low} to {_HIGHEST}, got {value}", field=name)
    return number


def _median(values: list[Decimal]) -> Decimal:
    """The median (``Infinity`` when an unknown value is in the middle). statistics.median averages
    the two middle values with Decimal arithmetic: exact for halves."""
    return Decimal(statistics.median(values)) if values else _ZERO


def _known(cost: Decimal, unpriced: int) -> Decimal:
    """A cost as it may enter a median: with unpriced events it is only a lower bound, so unknown."""
    return _UNKNOWN if unpriced else cost


#: The longest window ``spikes`` looks at (as the API's day series): ~2.7 years of days per group.
MAX_SPIKE_DAYS: Final = 1000


def _day(value: object, field: str) -> date:
    """A calendar day (UTC) from a ``date``, an aware ``datetime`` or an ISO date string."""
    if isinstance(value, datetime):
        return parse_instant(value, field).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"expected a date such as 2026-03-01, got {value!r}", field=field)


def spikes(
    ledger: LedgerStore,
    start: date | str,
    end: date | str,
    *,
    by: str = "tenant",
    tenant: str | None = None,
    factor: Decimal | int | str = Decimal(3),
    minimum: Decimal | int | str = Decimal(1),
    baseline_days: int = 14,
    environment: str | None = "production",
) -> list[Spike]:
    """Days in ``[start, end)`` when a ``by`` group's cost exceeded ``factor`` x the median of its
    previous ``baseline_days`` days (a day with no spend counts as 0) *and* ``minimum``."""
    start, end = _day(start, "from"), _day(end, "to")
    if by not in SPIKE_KEYS:
        raise InvalidInput(f"must be one of {', '.join(SPIKE_KEYS)}, got {by!r}", field="by")
    factor = _check("factor", factor, Decimal(1))
    minimum = _check("minimum", minimum, _ZERO)
    if not 1 <= baseline_days <= 366:
        raise InvalidInput(f"must be from 1 to 366, got {baseline_days}", field="days")
    if start >= end:
        raise InvalidInput(f"must be after from ({start}), got {end}", field="to")
    if (end - start).days > MAX_SPIKE_DAYS:  # each day of each group is looked at: bound the work
        raise InvalidInput(
            f"a window covers at most {MAX_SPIKE_DAYS} days, got {(end - start).days}", field="from"
        )
    first = start - timedelta(days=baseline_days)
    keys = ("day", "tenant") if by == "tenant" else ("day", by, "tenant")
    rows = Reports(ledger).totals(keys, first, end, environment=environment, tenant=tenant)
    daily: dict[tuple[str, str | None], dict[date, tuple[Decimal, int]]] = {}
    for t in rows:
        day_text, key, owner = (*t.key, t.key[1]) if by == "tenant" else t.key
        if key is None or day_text is None:
            continue
        days = daily.setdefault((key, owner), {})
        when = date.fromisoformat(day_text)
        cost, unpriced = days.get(when, (_ZERO, 0))
        days[when] = (
            MONEY_CONTEXT.add(cost, t.cost or _ZERO),
            unpriced + t.unpriced_events,
        )
    found: list[Spike] = []
    span = (end - first).days
    calendar = [first + timedelta(days=n) for n in range(span)]
    for (key, owner), days in daily.items():
        # Day n of the window is day baseline_days + n of ``known``; its baseline the days before.
        known = [_known(*days[day]) if day in days else _ZERO for day in calendar]
        for n in range(baseline_days, span):
            cost, unpriced = days.get(calendar[n], (_ZERO, 0))
            # Most group-days are under the minimum: no need for their median (with 50,000 tenants
            # the median of every tenant-day took a minute of the finance dashboard page).
            if not cost > minimum:
                continue
            baseline = _median(known[n - baseline_days : n])
            if baseline.is_finite() and cost > MONEY_CONTEXT.multiply(factor, baseline):
                found.append(Spike(calendar[n], by, key, owner, cost, baseline, unpriced))
    return sorted(found, key=lambda s: (s.day, -s.cost, s.key))


@dataclass(frozen=True, slots=True)
class RunawayRun:
    run_id: str
    tenant: str | None
    agent: str
    cost: Decimal
    median: Decimal
    runs_of_agent: int
    events: int
    unpriced_events: int

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "agent": self.agent,
            "cost": money_str(self.cost),
            "agent_median": money_str(self.median),
            "runs_of_agent": self.runs_of_agent,
            "events": self.events,
            "unpriced_events": self.unpriced_events,
        }


@dataclass(slots=True)
class _Run:
    tenant: str | None
    agent: str | None
    cost: Decimal = _ZERO
    events: int = 0
    unpriced: int = 0


def runaway_runs(
    ledger: LedgerStore,
    start: datetime | date | str,
    end: datetime | date | str,
    *,
    tenant: str | None = None,
    factor: Decimal | int | str = Decimal(5),
    minimum: Decimal | int | str = Decimal(0),
    min_runs: int = 5,
    environment: str | None = "production",
) -> list[RunawayRun]:
    """Root runs started in ``[start, end)`` whose rolled-up cost (the run and all its children)
    is over ``factor`` x the median run of the same agent, and over ``minimum``. An agent needs
    ``min_runs`` runs for its median to mean anything."""
    start, end = parse_instant(start, "from"), parse_instant(end, "to")
    factor = _check("factor", factor, Decimal(1))
    minimum = _check("minimum", minimum, _ZERO)
    if not 2 <= min_runs <= 10_000:
        raise InvalidInput(f"must be from 2 to 10000, got {min_runs}", field="min_runs")
    runs: dict[str, _Run] = {}
    for entry in ledger.entries(start.astimezone(UTC), end.astimezone(UTC), tenant=tenant):
        event = entry.event
        root = event.root_run_id or event.run_id
        if root is None or (environment is not None and event.environment != environment):
            continue
        if tenant is not None and event.tenant_id != tenant:
            continue  # a tenant's view of a shared run tree holds only its own events
        run = runs.setdefault(root, _Run(event.tenant_id, None))
        if event.run_id == root or run.agent is None:
            run.agent = event.agent or run.agent
            run.tenant = event.tenant_id if event.run_id == root else run.tenant
        run.events += 1
        if entry.cost is None:
            run.unpriced += 1
        else:
            run.cost = MONEY_CONTEXT.add(run.cost, entry.cost)
    by_agent: dict[str, list[tuple[str, _Run]]] = {}
    for run_id, run in runs.items():
        if run.agent is not None:
            by_agent.setdefault(run.agent, []).append((run_id, run))
    found: list[RunawayRun] = []
    for agent, members in by_agent.items():
        if len(members) < min_runs:
            continue
        median = _median([_known(run.cost, run.unpriced) for _, run in members])
        if not median.is_finite():
            continue  # most of the agent's runs cost an unknown amount: no median to compare with
        for run_id, run in members:
            if run.cost > minimum and run.cost > MONEY_CONTEXT.multiply(factor, median):
                found.append(
                    RunawayRun(
                        run_id, run.tenant, agent, run.cost, median, len(members), run.events, run.unpriced
                    )
                )
    return sorted(found, key=lambda r: (-r.cost, r.run_id))
