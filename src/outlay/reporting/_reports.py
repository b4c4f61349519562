"""``Reports``: the questions outlay answers, as JSON-ready rows computed from any :class:`LedgerStore`.

Totals over whole UTC days come from the rollups (fast at any ledger size); the partial days at the
edges of a window given with times are added up from the events themselves, so a window is exact
to the microsecond. Costs are exact decimal strings; ``cost`` is ``None`` (JSON ``null``) for a
group with no priced event, and ``unpriced_events`` says how many events have no known cost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO, money_str, money_sum
from outlay.events import ENVIRONMENTS
from outlay.ledger import GROUP_KEYS, SEVERAL_TENANTS, LedgerStore, RunTotals, Totals, parse_window
from outlay.ledger._rows import add_cost, check_by

__all__ = ["TOKEN_COLUMNS", "Reports"]

TOKEN_COLUMNS: Final = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
# Shares and ratios are not money: they are rounded, to 6 places, for people to read.
_RATIO_CONTEXT: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)
_RATIO_PLACES: Final = Decimal("0.000001")


def _cost_text(cost: Decimal | None) -> str | None:
    return None if cost is None else money_str(cost)


def _ratio(part: Decimal, whole: Decimal) -> str | None:
    if whole == 0:
        return None
    return str(_RATIO_CONTEXT.divide(part, whole).quantize(_RATIO_PLACES, context=_RATIO_CONTEXT))


def _row(by: Sequence[str], totals: Totals) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(by, totals.key, strict=True))
    row["events"] = totals.events
    row["cost"] = _cost_text(totals.cost)
    row["unpriced_events"] = totals.unpriced_events
    for name in TOKEN_COLUMNS:
        row[name] = getattr(totals, name)
    return row


def _order(totals: Totals) -> tuple[int, Decimal, tuple[str, ...]]:
    # Most expensive first; groups with no known cost after every priced one.
    return (totals.cost is None, -(totals.cost or ZERO), tuple(v or "" for v in totals.key))


def _merge(parts: Sequence[Totals]) -> list[Totals]:
    merged: dict[tuple[str | None, ...], Totals] = {}
    for part in parts:
        seen = merged.get(part.key)
        if seen is None:
            merged[part.key] = part
            continue
        merged[part.key] = Totals(
            part.key,
            seen.events + part.events,
            seen.unpriced_events + part.unpriced_events,
            add_cost(seen.cost, part.cost),
            *(getattr(seen, n) + getattr(part, n) for n in TOKEN_COLUMNS),
        )
    return list(merged.values())


def _check_environment(environment: str | None) -> str | None:
    if environment is not None and environment not in ENVIRONMENTS:
        raise InvalidInput(
            f"must be one of {', '.join(sorted(ENVIRONMENTS))}, got {environment!r}", field="environment"
        )
    return environment


def _check_tenant(tenant: str | None) -> str | None:
    # The ledger keeps unattributed spend under the empty tenant: "" must not select it (a script's
    # unset $TENANT would report the spend of no tenant as if it were one's).
    if tenant is not None and (not tenant or len(tenant) > 200 or not tenant.isprintable()):
        raise InvalidInput(
            f"must be a non-empty printable string of at most 200 characters, got {tenant!r}"
            " (spend with no tenant: the unattributed report)",
            field="tenant",
        )
    return tenant


def _parse_by(by: str | Sequence[str]) -> tuple[str, ...]:
    names = [part.strip() for part in by.split(",")] if isinstance(by, str) else list(by)
    if not names or any(not name for name in names):
        raise InvalidInput(f"give one or more of {', '.join(GROUP_KEYS)}, comma separated", field="by")
    return check_by(names)


class Reports:
    """Read-only reports over ``ledger`` (any :class:`LedgerStore`)."""

    def __init__(self, ledger: LedgerStore) -> None:
        self.ledger = ledger

    # -- building block ---------------------------------------------------------------------------

    def totals(
        self,
        by: str | Sequence[str],
        start: object,
        end: object,
        *,
        environment: str | None = None,
        tenant: str | None = None,
        unattributed: bool = False,
    ) -> list[Totals]:
        """Exact totals over ``[start, end)`` grouped by ``by``, most expensive first."""
        keys = _parse_by(by)
        window = parse_window(start, end)
        filters: dict[str, Any] = {
            "environment": _check_environment(environment),
            "tenant": _check_tenant(tenant),
            "unattributed": unattributed,
        }
        parts: list[Totals] = []
        days = window.full_days()
        if days is not None:
            parts.extend(self.ledger.rollup_totals(keys, days[0], days[1], **filters))
        for piece_start, piece_end in window.partial_pieces():
            parts.extend(self.ledger.event_totals(keys, piece_start, piece_end, **filters))
        return sorted(_merge(parts), key=_order)

    # -- reports ----------------------------------------------------------------------------------

    def breakdown(
        self,
        by: str | Sequence[str],
        start: object,
        end: object,
        *,
        environment: str | None = None,
        tenant: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``by`` keys (any of tenant, day, feature, agent, model, provider, operation,
        environment, origin) with ``events``, ``cost`` and ``unpriced_events``. Unattributed spend
        shows as ``tenant: None``."""
        keys = _parse_by(by)
        totals = self.totals(keys, start, end, environment=environment, tenant=tenant)
        return [_row(keys, t) for t in totals]

    def tenants(self, start: object, end: object, *, environment: str | None = None) -> list[dict[str, Any]]:
        """Spend per tenant (``tenant: None`` is unattributed spend)."""
        return self.breakdown(("tenant",), start, end, environment=environment)

    def unattributed(
        self, start: object, end: object, *, environment: str | None = None
    ) -> list[dict[str, Any]]:
        """Spend with no tenant, by ``origin`` (the run, workflow, job or service that made it)."""
        totals = self.totals(("origin",), start, end, environment=environment, unattributed=True)
        return [_row(("origin",), t) for t in totals]

    def unpriced(
        self, start: object, end: object, *, environment: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Events whose cost is unknown (still, after any re-rating), by provider, model and reason."""
        window = parse_window(start, end)
        keys = ("provider", "model", "reason")
        totals = self.ledger.event_totals(
            keys,
            window.start,
            window.end,
            environment=_check_environment(environment),
            tenant=_check_tenant(tenant),
            unpriced_only=True,
        )
        rows = []
        for t in sorted(totals, key=lambda t: (-t.unpriced_events, tuple(v or "" for v in t.key))):
            row: dict[str, Any] = dict(zip(keys, t.key, strict=True))
            row["unpriced_events"] = t.unpriced_events
            for name in TOKEN_COLUMNS:
                row[name] = getattr(t, name)
            rows.append(row)
        return rows

    def concentration(self, start: object, end: object, *, environment: str | None = None) -> dict[str, Any]:
        """How concentrated spend is: the share of the top 1/5/10 tenants, and each tenant vs the median.

        Shares and ratios are computed over *priced* cost; tenants whose every event is unpriced are
        listed with ``cost: None`` and left out of the shares and the median rather than counted as 0.
        """
        totals = self.totals(("tenant",), start, end, environment=environment)
        tenants = [t for t in totals if t.key[0] is not None]
        unattributed = [t for t in totals if t.key[0] is None]
        priced = [t for t in tenants if t.cost is not None]  # already most expensive first
        costs = [t.cost for t in priced if t.cost is not None]
        total = money_sum(costs)
        median = _median(costs)
        rows = []
        for rank, t in enumerate(tenants, start=1):
            rows.append(
                {
                    "rank": rank if t.cost is not None else None,
                    "tenant": t.key[0],
                    "events": t.events,
                    "cost": _cost_text(t.cost),
                    "unpriced_events": t.unpriced_events,
                    "share": None if t.cost is None else _ratio(t.cost, total),
                    "vs_median": None if t.cost is None or median is None else _ratio(t.cost, median),
                }
            )
        return {
            "tenants": len(tenants),
            "priced_tenants": len(priced),
            "total_cost": money_str(total),
            "top_1_share": _ratio(money_sum(costs[:1]), total),
            "top_5_share": _ratio(money_sum(costs[:5]), total),
            "top_10_share": _ratio(money_sum(costs[:10]), total),
            "median_cost": _cost_text(median),
            # No unattributed event: a known 0. Unattributed events none of them priced: unknown (None).
            "unattributed_cost": _cost_text(unattributed[0].cost) if unattributed else "0",
            "unattributed_events": unattributed[0].events if unattributed else 0,
            "unpriced_events": sum(t.unpriced_events for t in totals),
            "rows": rows,
        }

    def run_tree(self, run_id: str) -> dict[str, Any]:
        """The run ``run_id`` and its descendants: each node's own cost and the cost rolled up from
        its subtree (``total_cost``). A run that recorded no event itself but has children appears
        with zero events and ``inferred: True``; one whose events came from several tenants has
        ``tenant: None`` and ``several_tenants: True``."""
        if not isinstance(run_id, str) or not run_id:
            raise InvalidInput("must be a non-empty run id", field="run_id")
        nodes: dict[str, RunTotals] = {r.run_id: r for r in self.ledger.runs(run_ids=[run_id])}
        frontier = [run_id]
        while frontier:
            found = [r for r in self.ledger.runs(parent_run_ids=frontier) if r.run_id not in nodes]
            nodes.update((r.run_id, r) for r in found)
            frontier = [r.run_id for r in found]
        top = nodes.get(run_id)
        if top is None or top.root_run_id in (None, run_id):
            # ``run_id`` is a root: runs under it whose parent recorded nothing are found by root.
            for r in self.ledger.runs(root_run_id=run_id):
                nodes.setdefault(r.run_id, r)
        if len(nodes) == 0:
            raise InvalidInput(f"no events recorded for run {run_id!r} or any run under it", field="run_id")
        return _tree(run_id, nodes)


def _median(costs: Sequence[Decimal]) -> Decimal | None:
    if not costs:
        return None
    ordered = sorted(costs)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return MONEY_CONTEXT.divide(MONEY_CONTEXT.add(ordered[middle - 1], ordered[middle]), Decimal(2))


def _tree(run_id: str, nodes: dict[str, RunTotals]) -> dict[str, Any]:
    children: dict[str, list[str]] = {}
    for r in nodes.values():
        if r.run_id == run_id:
            continue
        parent = r.parent_run_id or run_id
        if parent not in nodes and parent != run_id:
            # A parent that recorded no event itself: shown (inferred) under the requested run,
            # since where it hangs above that is unknown.
            inferred = children.setdefault(run_id, [])
            if parent not in inferred:
                inferred.append(parent)
        children.setdefault(parent, []).append(r.run_id)
    return _node(run_id, nodes, children)


def _node(run_id: str, nodes: dict[str, RunTotals], children: dict[str, list[str]]) -> dict[str, Any]:
    """The tree under ``run_id``, depth first with each run once. Iterative: a chain of runs deeper
    than Python's recursion limit (a re-planning agent spawning sub-runs) is an ordinary tree."""
    seen = {run_id}
    stack: list[tuple[str, Iterator[str], list[dict[str, Any]]]] = [
        (run_id, iter(sorted(children.get(run_id, ()))), [])
    ]
    while True:
        current, pending, kids = stack[-1]
        for child in pending:
            if child not in seen:
                seen.add(child)
                stack.append((child, iter(sorted(children.get(child, ()))), []))
                break
        else:
            stack.pop()
            built = _node_dict(current, nodes.get(current), kids)
            if not stack:
                return built
            stack[-1][2].append(built)


def _node_dict(run_id: str, own: RunTotals | None, kids: list[dict[str, Any]]) -> dict[str, Any]:
    events = own.events if own else 0
    unpriced = own.unpriced_events if own else 0
    total_cost = own.cost if own else None
    for kid in kids:
        kid_total = None if kid["total_cost"] is None else Decimal(kid["total_cost"])
        total_cost = add_cost(total_cost, kid_total)
    return {
        "run_id": run_id,
        "agent": own.agent if own else None,
        "tenant": own.tenant_id or None if own else None,
        # events of several tenants (a job over many, or one run id used by two): no tenant's own
        "several_tenants": own is not None and own.tenant_id == SEVERAL_TENANTS,
        # recorded nothing itself: known from its descendants' events (their run_path or parent)
        "inferred": own is None or own.events == 0,
        "events": events,
        "unpriced_events": unpriced,
        "cost": _cost_text(own.cost if own else None),
        "total_events": events + sum(k["total_events"] for k in kids),
        "total_unpriced_events": unpriced + sum(k["total_unpriced_events"] for k in kids),
        "total_cost": _cost_text(total_cost),
        "children": kids,
    }
