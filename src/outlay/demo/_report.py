"""The CFO's report, as data: every number read back from the ledger (:class:`outlay.reporting.Reports`).

The simulation's own tally (what ``record`` returned) is used only to reconcile: the ledger's total
from the rollups, the sum of the ledger's events, and the sum of the recorded events must be the
same exact amount.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from outlay._money import MONEY_CONTEXT, ZERO, money_str, money_sum
from outlay.reporting import Reports

from ._platform import DAYS, START
from ._simulate import Simulation
from ._workflows import FREE_RUN_BUDGET

__all__ = ["DRIVERS", "END", "build_report", "ledger_total"]

END: Final = START + timedelta(days=DAYS)
#: The dimensions of "what drives the cost".
DRIVERS: Final = ("feature", "agent", "model")
_TOP: Final = 8
_RATIO: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)  # shares are for reading, not money


def _share(part: str | None, whole: Decimal) -> str | None:
    if part is None or whole == 0:
        return None
    return str(_RATIO.divide(Decimal(part), whole).quantize(Decimal("0.000001"), context=_RATIO))


def ledger_total(reports: Reports) -> tuple[Decimal, int, int]:
    """(cost, events, unpriced events) of the whole simulated month, from the rollups."""
    rows = reports.totals(("environment",), START, END)
    return (
        money_sum(t.cost for t in rows if t.cost is not None),
        sum(t.events for t in rows),
        sum(t.unpriced_events for t in rows),
    )


def _costliest_run(reports: Reports, roots: tuple[str, ...]) -> dict[str, Any] | None:
    best: tuple[Decimal, str] | None = None
    for root in roots:
        cost = money_sum(r.cost for r in reports.ledger.runs(root_run_id=root) if r.cost is not None)
        if best is None or cost > best[0]:
            best = (cost, root)
    return None if best is None else reports.run_tree(best[1])


def _read_events(reports: Reports) -> tuple[Decimal, list[dict[str, Any]]]:
    """One pass over the ledger's events: the sum of their effective costs (independent of the
    rollups) and the budget decisions among them."""
    costs: list[Decimal] = []
    decisions = []
    for entry in reports.ledger.entries(START, END):
        if entry.priced and entry.cost is not None:
            costs.append(entry.cost)
        event = entry.event
        if event.operation.startswith("decision:"):
            decisions.append(
                {
                    "time": event.time.isoformat(),
                    "tenant": event.tenant_id,
                    "kind": event.operation.removeprefix("decision:"),
                    "agent": event.agent,
                    "run_id": event.run_id,
                    "message": event.labels.get("message"),
                }
            )
    return money_sum(costs), decisions


def build_report(reports: Reports, sim: Simulation, *, baseline: Decimal = ZERO) -> dict[str, Any]:
    """The report of one demo run. ``baseline`` is what the ledger held before it (``--keep``)."""
    total, events, unpriced = ledger_total(reports)
    plans = {t.name: t.plan for t in sim.tenants}
    concentration = reports.concentration(START, END)
    by_tenant = {row["tenant"]: row for row in concentration["rows"]}
    tenants = []
    for row in reports.tenants(START, END):
        name = row["tenant"]
        tenants.append(
            {
                "tenant": name,
                "plan": plans.get(name) if name is not None else None,
                "events": row["events"],
                "cost": row["cost"],
                "unpriced_events": row["unpriced_events"],
                "share": _share(row["cost"], total),
                "vs_median": by_tenant[name]["vs_median"] if name in by_tenant else None,
            }
        )
    drivers = {}
    for key in DRIVERS:
        rows = reports.breakdown((key,), START, END)
        drivers[key] = [
            {key: r[key], "events": r["events"], "cost": r["cost"], "share": _share(r["cost"], total)}
            for r in rows[:_TOP]
        ]
    unattributed = [
        {
            **{k: r[k] for k in ("origin", "events", "cost", "unpriced_events")},
            "share": _share(r["cost"], total),
        }
        for r in reports.unattributed(START, END)
    ]
    ranked = [r for r in concentration["rows"] if r["cost"] is not None]
    top = ranked[0] if ranked else None
    events_total, decisions = _read_events(reports)
    recorded = MONEY_CONTEXT.add(baseline, sim.recorded_cost)
    return {
        "window": {"from": START.date().isoformat(), "to": END.date().isoformat()},
        "config": {
            "seed": sim.config.seed,
            "tenants": sim.config.tenants,
            "runs": sim.config.runs,
            "power_ratio": sim.config.power_ratio,
        },
        "simulation": {
            "events": sim.events,
            "root_runs": len(sim.root_runs),
            "power_user_runs": sim.power_runs,
            "digests_via_queue": sim.digests,
            "runaway_calls_before_stop": sim.runaway_calls,
            "free_run_budget": FREE_RUN_BUDGET,
        },
        "totals": {"events": events, "cost": money_str(total), "unpriced_events": unpriced},
        "tenants": tenants,
        "drivers": drivers,
        "costliest_run": _costliest_run(reports, sim.root_runs),
        "unattributed": unattributed,
        "unpriced": [
            {
                k: r[k]
                for k in ("provider", "model", "reason", "unpriced_events", "input_tokens", "output_tokens")
            }
            for r in reports.unpriced(START, END)
        ],
        "concentration": {
            "top_tenant": top["tenant"] if top else None,
            "top_1_share": concentration["top_1_share"],
            "top_5_share": concentration["top_5_share"],
            "median_cost": concentration["median_cost"],
            "max_vs_median": top["vs_median"] if top else None,
            "tenant_cost": concentration["total_cost"],
        },
        "decisions": decisions,
        "reconciliation": {
            "ledger_rollups": money_str(total),
            "ledger_events": money_str(events_total),
            "recorded": money_str(recorded),
            "exact": total == events_total == recorded,
        },
    }
