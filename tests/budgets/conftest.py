"""Fixtures for the budgets tests: an injectable clock (no sleeps) and a decision sink."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outlay import budgets
from outlay.budgets import InMemoryDecisionSink


@pytest.fixture(autouse=True)
def _budget_listener() -> None:
    """Importing outlay.budgets registers its run listener; make sure it is there for these tests."""
    budgets.install()


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: 2026-03-15 12:00:00 UTC, a plain mid-month instant.
START = datetime(2026, 3, 15, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sink() -> InMemoryDecisionSink:
    return InMemoryDecisionSink()
