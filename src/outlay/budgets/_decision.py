"""``Decision``: the record of every budget action, for the ledger and reports.

The engine hands each one to the ``decision_sink`` callable it was built with (the ledger, in an
assembled outlay; :class:`InMemoryDecisionSink` in tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import uuid_utils

from outlay._money import money_str

__all__ = ["DECISION_KINDS", "Decision", "DecisionSink", "InMemoryDecisionSink", "format_money"]

DECISION_KINDS: Final = frozenset(
    {"soft_exceeded", "denied", "downgraded", "run_stopped", "throttled", "not_entitled"}
)


def format_money(amount: Decimal | None, currency: str = "USD") -> str:
    """``$24.80`` (cents when exact, every digit otherwise: ``$0.0125``), ``EUR 3.00``."""
    if amount is None:
        return "unknown"
    cents = amount.quantize(Decimal("0.01"))
    text = f"{cents:.2f}" if cents == amount else money_str(amount)
    return f"${text}" if currency == "USD" else f"{currency} {text}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One budget action: what happened (``kind``), to whom, against which limit, and why."""

    kind: str
    message: str
    id: str = field(default_factory=lambda: str(uuid_utils.uuid7()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    tenant: str | None = None
    scope: str | None = None
    key: str | None = None
    budget: str | None = None
    limit: Decimal | None = None
    spent: Decimal | None = None
    reserved: Decimal | None = None
    estimate: Decimal | None = None
    model: str | None = None
    downgraded_to: str | None = None
    run_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DECISION_KINDS:
            raise ValueError(f"kind: expected one of {sorted(DECISION_KINDS)}, got {self.kind!r}")


DecisionSink = Callable[[Decision], object]


class InMemoryDecisionSink:
    """Keeps every decision in a list (thread-safe); for tests and quick inspection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: list[Decision] = []

    def __call__(self, decision: Decision) -> None:
        with self._lock:
            self._decisions.append(decision)

    @property
    def decisions(self) -> list[Decision]:
        with self._lock:
            return list(self._decisions)

    def of_kind(self, kind: str) -> list[Decision]:
        return [d for d in self.decisions if d.kind == kind]

    def clear(self) -> None:
        with self._lock:
            self._decisions.clear()
