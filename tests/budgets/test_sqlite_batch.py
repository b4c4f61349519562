"""SQLiteBudgetStore.batch(): many operations, one transaction; each still atomic on its own."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from outlay._errors import InvalidInput
from outlay.budgets import InMemoryBudgetStore, KeyLimit, SQLiteBudgetStore

KEY = [KeyLimit("tenant:acme", D("1.00"))]


def test_a_batch_commits_its_operations_together(tmp_path: Path) -> None:
    store = SQLiteBudgetStore(tmp_path / "b.db")
    with store.batch():
        assert store.reserve("r1", KEY, D("0.40"), 30).ok
        assert store.settle("r1", D("0.25")).ok
        assert store.reserve("r2", KEY, D("0.50"), 30).ok
        assert not store.reserve("r3", KEY, D("0.30"), 30).ok  # 0.25 + 0.50 + 0.30 > 1.00
        assert store.status("tenant:acme").reserved == D("0.50")  # the batch reads its own writes
    status = SQLiteBudgetStore(tmp_path / "b.db").status("tenant:acme")  # as another process sees it
    assert (status.spent, status.reserved) == (D("0.25"), D("0.50"))


def test_a_failing_operation_is_undone_alone(tmp_path: Path) -> None:
    store = SQLiteBudgetStore(tmp_path / "b.db")
    with store.batch():
        assert store.reserve("r1", KEY, D("0.40"), 30).ok
        with pytest.raises(InvalidInput, match="already exists"):
            store.reserve("r1", KEY, D("0.40"), 30)
        with pytest.raises(InvalidInput, match="unknown"):
            store.settle("nope", D("0.10"))
        assert store.settle("r1", D("0.10")).ok
    status = SQLiteBudgetStore(tmp_path / "b.db").status("tenant:acme")
    assert (status.spent, status.reserved) == (D("0.10"), D("0"))


def test_an_error_escaping_the_batch_rolls_all_of_it_back(tmp_path: Path) -> None:
    store = SQLiteBudgetStore(tmp_path / "b.db")
    with pytest.raises(RuntimeError), store.batch():
        assert store.reserve("r1", KEY, D("0.40"), 30).ok
        raise RuntimeError("the caller crashed mid-batch")
    assert store.status("tenant:acme").reserved == 0
    assert store.reserve("r1", KEY, D("0.40"), 30).ok  # the id was never taken


def test_other_stores_accept_batch_as_a_no_op() -> None:
    store = InMemoryBudgetStore()
    with store.batch():
        assert store.reserve("r1", KEY, D("0.40"), 30).ok
    assert store.status("tenant:acme").reserved == D("0.40")
