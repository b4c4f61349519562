"""Fixtures for the budgets tests: an injectable clock (no sleeps) and a decision sink."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from outlay import budgets
from outlay.budgets import InMemoryDecisionSink

# Importing outlay.budgets registers its run listener process-wide. Keep it registered only while
# a budgets test runs, so other packages' tests in the same session see no extra listener.
budgets.uninstall()


@pytest.fixture(autouse=True)
def _budget_listener() -> Iterator[None]:
    budgets.install()
    yield
    budgets.uninstall()


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
