"""Reconciliation: outlay's cost per provider, model and UTC day against the provider's own export.

The provider's bill is what was paid; the ledger is what outlay metered. A drift between the two
means an unpriced or mispriced model, calls that bypassed outlay, or a price catalog out of date.
The export is read by :func:`parse_provider_csv` (see ``_provider_csv`` for the shapes it knows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Any, Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO, money_str, to_money
from outlay.ledger import LedgerStore

from ._provider_csv import (
    DayModel,
    ProviderExport,
    SideTotals,
    in_range,
    model_key,
    parse_provider_csv,
    provider_name,
)

__all__ = ["Reconciled", "Reconciliation", "reconcile"]

_DECISION: Final = "decision:"
_RATIO: Final = Context(prec=100)  # percentages are ratios, not money: rounded for people to read


def _date(raw: date | str | None, name: str) -> date | None:
    if raw is None or isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            f"must be a date like 2026-03-01 (whole UTC days), got {raw!r}", field=name
        ) from None


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One (day, model) compared. ``drift`` is ours minus theirs (negative: the provider billed more
    than outlay metered), a missing side counting as zero; ``drift_pct`` is it in percent of theirs.
    ``status``: ``match`` (within the tolerance), ``drift``, ``unpriced`` (ours has unpriced events,
    so its cost is only a lower bound), ``ours_only`` or ``theirs_only``."""

    day: date
    model: str | None
    status: str
    ours_cost: Decimal | None
    theirs_cost: Decimal | None
    drift: Decimal | None
    drift_pct: Decimal | None
    ours_tokens: int
    theirs_tokens: int | None
    token_drift: int | None
    ours_events: int
    ours_unpriced_events: int
    ours_models: tuple[str, ...]
    theirs_models: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        def text(amount: Decimal | None) -> str | None:
            return None if amount is None else money_str(amount)

        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "status": self.status,
            "ours_cost": text(self.ours_cost),
            "theirs_cost": text(self.theirs_cost),
            "drift": text(self.drift),
            "drift_pct": None if self.drift_pct is None else str(self.drift_pct),
            "ours_tokens": self.ours_tokens,
            "theirs_tokens": self.theirs_tokens,
            "token_drift": self.token_drift,
            "ours_events": self.ours_events,
            "ours_unpriced_events": self.ours_unpriced_events,
            "ours_models": list(self.ours_models),
            "theirs_models": list(self.theirs_models),
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The rows of a reconciliation, in (day, model) order, and its totals over ``[start, end)``."""

    provider: str
    shape: str
    start: date
    end: date
    environment: str | None
    tolerance: Decimal
    rows: tuple[Reconciled, ...]
    lines: int  # export rows read
    skipped_lines: int  # of which outside the window
    ours_cost: Decimal | None  # None: we have events here and none of them is priced (unknown)
    theirs_cost: Decimal | None  # None: a tokens-only export
    unpriced_events: int

    @property
    def drift(self) -> Decimal | None:
        if self.theirs_cost is None or self.ours_cost is None:
            return None  # (an unknown side is not zero: no drift to state)
        return MONEY_CONTEXT.subtract(self.ours_cost, self.theirs_cost)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    def to_json(self) -> dict[str, Any]:
        drift = self.drift
        return {
            "provider": self.provider,
            "shape": self.shape,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "environment": self.environment,
            "currency": "USD",
            "tolerance": money_str(self.tolerance),
            "ours_cost": None if self.ours_cost is None else money_str(self.ours_cost),
            "theirs_cost": None if self.theirs_cost is None else money_str(self.theirs_cost),
            "drift": None if drift is None else money_str(drift),
            "drift_pct": None if (pct := _pct(drift, self.theirs_cost)) is None else str(pct),
            "unpriced_events": self.unpriced_events,
            "lines": self.lines,
            "skipped_lines": self.skipped_lines,
            "counts": {s: self.count(s) for s in ("match", "drift", "unpriced", "ours_only", "theirs_only")},
            "rows": [row.to_json() for row in self.rows],
        }


def _pct(drift: Decimal | None, theirs: Decimal | None) -> Decimal | None:
    if drift is None or theirs is None or theirs == 0:
        return None
    try:
        pct = _RATIO.divide(_RATIO.multiply(drift, 100), theirs).quantize(Decimal("0.01"), context=_RATIO)
    except InvalidOperation:  # a percentage over 10^97: nothing a person could read anyway
        return None
    # A drift too small for two places is 0.00, not "-0.00" (Decimal keeps the sign of a zero).
    return pct.copy_abs() if pct.is_zero() else pct


def _ours(
    ledger: LedgerStore, provider: str, start: date, end: date, environment: str | None
) -> dict[DayModel, SideTotals]:
    groups: dict[DayModel, SideTotals] = {}
    for t in ledger.rollup_totals(
        ("day", "provider", "model", "operation"), start, end, environment=environment
    ):
        day, their_provider, model, operation = t.key
        if their_provider != provider or (operation or "").startswith(_DECISION):
            continue  # budget decisions are ledger events that cost nothing
        side = groups.setdefault((date.fromisoformat(str(day)), model_key(model)), SideTotals(tokens=0))
        side.add(t.cost, t.input_tokens + t.output_tokens, model)
        side.events += t.events
        side.unpriced_events += t.unpriced_events
    return groups


def _compare(
    key: DayModel, ours: SideTotals | None, theirs: SideTotals | None, export: ProviderExport, tol: Decimal
) -> Reconciled:
    mine = ours or SideTotals(tokens=0)
    drift: Decimal | None = None
    if export.has_cost and (ours is None or mine.cost is not None):  # all unpriced: unknown
        their_cost = ZERO if theirs is None or theirs.cost is None else theirs.cost
        drift = MONEY_CONTEXT.subtract(mine.cost or ZERO, their_cost)
    their_tokens = theirs.tokens if theirs is not None and export.has_tokens else None
    token_drift = None if not export.has_tokens else (mine.tokens or 0) - (their_tokens or 0)
    if ours is None:
        status = "theirs_only"
    elif theirs is None:
        status = "ours_only"
    elif export.has_cost and mine.unpriced_events:
        status = "unpriced"  # our side is a lower bound: no verdict until re-rated
    elif export.has_cost:
        status = "match" if drift is not None and drift.copy_abs() <= tol else "drift"
    else:
        status = "match" if token_drift == 0 else "drift"
    return Reconciled(
        day=key[0],
        model=key[1],
        status=status,
        ours_cost=mine.cost if ours is not None else None,
        theirs_cost=theirs.cost if theirs is not None else None,
        drift=drift,
        drift_pct=None if theirs is None else _pct(drift, theirs.cost),
        ours_tokens=mine.tokens or 0,
        theirs_tokens=their_tokens,
        token_drift=token_drift,
        ours_events=mine.events,
        ours_unpriced_events=mine.unpriced_events,
        ours_models=tuple(sorted(mine.names)),
        theirs_models=tuple(sorted(theirs.names)) if theirs is not None else (),
    )


def reconcile(
    ledger: LedgerStore,
    provider: str,
    data: str | bytes | ProviderExport,
    *,
    start: date | str | None = None,
    end: date | str | None = None,
    columns: Mapping[str, str] | str | None = None,
    tolerance: Decimal | str = Decimal("0.01"),
    environment: str | None = None,
) -> Reconciliation:
    """Compare the ledger's cost (and tokens) of ``provider`` per UTC day and model with its export.

    ``start``/``end`` are whole UTC days ``[start, end)``; by default the days the export covers.
    Export rows outside the window are skipped (and counted). Every environment counts unless
    ``environment`` is given: the provider bills staging calls too. A row matches when
    ``|ours - theirs| <= tolerance`` (USD; exports round their amounts)."""
    provider = provider_name(provider)
    export = data if isinstance(data, ProviderExport) else parse_provider_csv(data, provider, columns=columns)
    tol = to_money(tolerance, field="tolerance")
    if not in_range(tol):
        raise InvalidInput(f"must be under 10^12 with at most 30 decimal places, got {tolerance!r}",
                           field="tolerance")  # fmt: skip
    first, last = _date(start, "from"), _date(end, "to")
    if first is None or last is None:
        span = export.days
        if span is None:
            raise InvalidInput(
                "the export has no rows; give from and to to see outlay's side alone", field="csv"
            )
        first = span[0] if first is None else first
        last = span[1] + timedelta(days=1) if last is None else last
    if first >= last:
        raise InvalidInput(f"must be after from ({first.isoformat()}), got {last.isoformat()}", field="to")
    theirs = {key: side for key, side in export.groups.items() if first <= key[0] < last}
    ours = _ours(ledger, provider, first, last, environment)
    keys = sorted(set(ours) | set(theirs), key=lambda k: (k[0], k[1] or ""))
    rows = tuple(_compare(k, ours.get(k), theirs.get(k), export, tol) for k in keys)
    with localcontext(MONEY_CONTEXT):
        priced = [s.cost for s in ours.values() if s.cost is not None]
        # Our events none of which is priced cost an unknown amount, not 0 (nor a -100 % drift).
        ours_cost = sum(priced, ZERO) if priced or not ours else None
        theirs_cost = sum((s.cost or ZERO for s in theirs.values()), ZERO) if export.has_cost else None
    skipped = sum(side.lines for key, side in export.groups.items() if key not in theirs)
    return Reconciliation(
        provider=provider,
        shape=export.shape,
        start=first,
        end=last,
        environment=environment,
        tolerance=tol,
        rows=rows,
        lines=export.lines,
        skipped_lines=skipped,
        ours_cost=ours_cost,
        theirs_cost=theirs_cost,
        unpriced_events=sum(s.unpriced_events for s in ours.values()),
    )
