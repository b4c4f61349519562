"""The public surface: everything in ``outlay.__all__`` exists, and nothing private leaks into it."""

from __future__ import annotations

import outlay


def test_all_exports_exist_and_are_public() -> None:
    for name in outlay.__all__:
        assert hasattr(outlay, name), name
        assert not name.startswith("_") or name == "__version__"


def test_every_error_derives_from_outlay_error() -> None:
    errors = [getattr(outlay, n) for n in outlay.__all__ if isinstance(getattr(outlay, n), type)]
    for cls in errors:
        if issubclass(cls, Exception):
            assert issubclass(cls, outlay.OutlayError), cls
    assert issubclass(outlay.InvalidInput, ValueError)
    assert issubclass(outlay.BudgetExceeded, outlay.BudgetError)
