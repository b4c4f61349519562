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


def test_no_subpackage_shadows_a_top_level_function() -> None:
    # Importing a subpackage sets it as an attribute of ``outlay``: one named like a function of
    # the API (``outlay.reports``, once) replaced that function after its first use.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(outlay.__path__):
        importlib.import_module(f"outlay.{module.name}")
    for name in outlay.__all__:
        assert not isinstance(getattr(outlay, name), type(outlay)), f"outlay.{name} is a module"
    outlay.configure(url="memory://")
    try:
        assert outlay.reports().tenants("2026-01-01", "2026-02-01") == []
        assert outlay.reports().tenants("2026-01-01", "2026-02-01") == []  # and again
    finally:
        outlay.shutdown()
