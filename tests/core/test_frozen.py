"""``slot_init``: the faster ``__init__`` of CostEvent and Usage behaves as the dataclass's own."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from outlay._errors import InvalidEvent, InvalidUsage
from outlay._frozen import slot_init
from outlay._usage import Usage
from outlay.events import CostEvent


def _dataclass_twin(cls: type[Any]) -> type[Any]:
    """The same class as @dataclass alone would make it (its generated __init__)."""
    params = cls.__dataclass_params__
    namespace = {"__annotations__": {f.name: f.type for f in dataclasses.fields(cls)}}
    for f in dataclasses.fields(cls):
        namespace[f.name] = dataclasses.field(default=f.default, default_factory=f.default_factory)
    namespace["__post_init__"] = cls.__post_init__
    twin = type(cls.__name__, (), namespace)
    return dataclasses.dataclass(frozen=params.frozen, slots=True, kw_only=cls is CostEvent)(twin)


@pytest.mark.parametrize("cls", [CostEvent, Usage])
def test_slot_init_has_the_dataclass_signature(cls: type[Any]) -> None:
    mine, theirs = inspect.signature(cls), inspect.signature(_dataclass_twin(cls))
    assert [(p.name, p.kind, repr(p.default)) for p in mine.parameters.values()] == [
        (p.name, p.kind, repr(p.default)) for p in theirs.parameters.values()
    ]


def test_slot_init_sets_every_field_calls_factories_and_validates() -> None:
    event = CostEvent(tenant_id="acme", priced=True, cost=Decimal("0.5"), usage=Usage(10, output_tokens=2))
    assert event.tenant_id == "acme" and event.cost == Decimal("0.5") and event.usage.input_tokens == 10
    assert event.environment == "production" and event.labels == {} and event.workspace_id is None
    other = CostEvent(tenant_id="acme", priced=True, cost=Decimal("0.5"))
    assert other.event_id != event.event_id  # the id factory runs for each event
    assert abs(other.time - datetime.now(UTC)).total_seconds() < 60
    assert dataclasses.replace(event, feature="search").feature == "search"
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.tenant_id = "other"  # type: ignore[misc]
    with pytest.raises(InvalidEvent, match="non-empty") as caught:
        CostEvent(tenant_id="acme", priced=True, cost=Decimal(1), region="")
    assert caught.value.field == "region"
    with pytest.raises(InvalidEvent) as caught:
        CostEvent(tenant_id="acme", priced=True, cost=Decimal(1), run_id="x" * 201)
    assert caught.value.field == "run_id"
    with pytest.raises(InvalidUsage, match="exceeds"):
        Usage(1, cache_read_tokens=2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        CostEvent(tenant="acme")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        CostEvent("acme")  # type: ignore[misc]


def test_slot_init_refuses_classes_it_cannot_serve() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int = 0

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class NoPostInit:
        a: int = 0

    @dataclasses.dataclass(frozen=True, slots=True)
    class Mixed:
        a: int = 0
        b: int = dataclasses.field(default=0, kw_only=True)

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, NoPostInit, Mixed):
        with pytest.raises(TypeError, match="slot_init"):
            slot_init(cls)
