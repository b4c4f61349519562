"""Every context test starts and ends outside any cost context, with the default environment unset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outlay.context import current, set_default_environment


@pytest.fixture(autouse=True)
def _context_alone() -> Iterator[None]:
    """These tests exercise the context package in isolation: without the budgets run listener
    (which ``import outlay`` installs and which would enforce the budgets/tiers they pass)."""
    from outlay import budgets

    budgets.uninstall()
    yield
    budgets.install()


@pytest.fixture(autouse=True)
def _clean_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OUTLAY_ENVIRONMENT", raising=False)
    set_default_environment(None)
    assert current() is None
    yield
    set_default_environment(None)
    assert current() is None, "a test left a cost context attached"
