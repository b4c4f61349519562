"""``slot_init``: a faster ``__init__`` for a frozen, slotted dataclass, with the same signature.

``@dataclass(frozen=True)`` makes ``__init__`` assign each field through ``object.__setattr__``
(the class's own ``__setattr__`` refuses): a generic attribute lookup per field. With ``slots=True``
each field is a slot whose descriptor can be set directly, which is what this ``__init__`` does.
For a ``CostEvent`` (35 fields, built for every event recorded and for every event the ledger
writer decodes) that is ~1.5 us of ~9 (docs/benchmarks.md). Everything else is the dataclass's:
the same keyword-only parameters and defaults (factories called when the argument is omitted),
then ``__post_init__``, which still validates every field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeVar

__all__ = ["slot_init"]

_T = TypeVar("_T")
_MISSING: Any = dataclasses.MISSING


class _Factory:
    """The default of a parameter whose field has a factory (shown as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY: Final = _Factory()


def slot_init(cls: type[_T]) -> type[_T]:
    """Replace the dataclass ``__init__`` of ``cls`` (frozen, slots, with a ``__post_init__``; its
    fields all keyword-only or none) by one that sets the slots through their descriptors."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not (params.frozen and params.init and "__slots__" in cls.__dict__ and hasattr(cls, "__post_init__")):
        raise TypeError(
            f"{cls.__name__}: slot_init needs @dataclass(frozen=True, slots=True) with __post_init__"
        )
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    keyword_only = {field.kw_only for field in fields}
    if len(keyword_only) != 1 or not all(field.init for field in fields):
        raise TypeError(f"{cls.__name__}: slot_init needs init fields, all keyword-only or none")
    namespace: dict[str, Any] = {"FACTORY": _FACTORY}
    parameters: list[str] = ["*"] if keyword_only == {True} else []
    body: list[str] = []
    for field in fields:
        name = field.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if field.default is not _MISSING:
            namespace[f"_default_{name}"] = field.default
            parameters.append(f"{name}=_default_{name}")
            body.append(f"    _set_{name}(self, {name})")
        elif field.default_factory is not _MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            parameters.append(f"{name}=FACTORY")
            body.append(f"    _set_{name}(self, _factory_{name}() if {name} is FACTORY else {name})")
        else:
            parameters.append(name)
            body.append(f"    _set_{name}(self, {name})")
    source = (
        f"def __init__(self, {', '.join(parameters)}):\n" + "\n".join(body) + "\n    self.__post_init__()\n"
    )
    exec(source, namespace)  # how dataclasses builds its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = cls.__init__.__annotations__
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses an assignment to a method)
    return cls
