"""``attribute()``: say who the work below is done for."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Self

from outlay._errors import InvalidInput

from ._context import (
    BILLING_UNITS,
    ENVIRONMENTS,
    MAX_LABELS,
    CostContext,
    attach,
    check_choice,
    check_labels,
    check_str,
    current,
    default_environment,
    derive,
)
from ._scope import Scope

__all__ = ["AttributeScope", "attribute"]

_BLANK: Final = CostContext()


class AttributeScope(Scope[CostContext]):
    """Returned by :func:`attribute`; entering it yields the new :class:`CostContext`."""

    __slots__ = ("_changes", "_labels")

    def __init__(self, changes: Mapping[str, str], labels: Mapping[str, str]) -> None:
        super().__init__()
        self._changes = changes
        self._labels = labels

    def _open(self) -> CostContext:
        base = current()
        changes: dict[str, Any] = dict(self._changes)
        if base is None:
            base = _BLANK
            changes.setdefault("environment", default_environment())
        if self._labels:
            # Labels merge key by key: an inner attribute() adds to or overrides the outer labels.
            labels = MappingProxyType({**base.labels, **self._labels}) if base.labels else self._labels
            if len(labels) > MAX_LABELS:
                # Each attribute() is within bounds alone; refused as the block opens, before the
                # calls inside it are made, not as their events are recorded.
                raise InvalidInput(
                    f"at most {MAX_LABELS} labels, got {len(labels)} with the enclosing context's",
                    field="labels",
                )
            changes["labels"] = labels
        ctx = derive(base, changes)
        self._token = attach(ctx)
        return ctx

    def _fresh(self) -> Self:
        return type(self)(self._changes, self._labels)


def attribute(
    *,
    tenant: str | None = None,
    workspace: str | None = None,
    user: str | None = None,
    feature: str | None = None,
    billing_unit: str | None = None,
    environment: str | None = None,
    request_id: str | None = None,
    workflow_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    **more_labels: str,
) -> AttributeScope:
    """Attribute the work inside ``with attribute(...)`` (or a decorated function) to these values.

    Arguments left ``None`` keep the enclosing value, so nested calls override field by field.
    Extra keyword arguments are labels (``attribute(tenant="acme", team="search")``); ``labels=``
    takes keys that are not Python identifiers. Labels merge key by key with the enclosing ones.
    Arguments are checked here, so a bad decorator argument fails at import time.

    Raises :class:`~outlay.InvalidInput` naming the field: an empty or over-long value, an unknown
    ``environment`` (production|staging|development|test) or ``billing_unit``
    (user|workspace|feature|campaign), labels out of bounds (more than 64 with the enclosing ones,
    a key that is not a plain name of at most 64 characters, a value over 1024 characters).
    """
    changes: dict[str, str] = {}
    for name, value in (
        ("tenant", tenant),
        ("workspace", workspace),
        ("user", user),
        ("feature", feature),
        ("request_id", request_id),
        ("workflow_id", workflow_id),
    ):
        if value is not None:
            changes[name] = check_str(name, value)
    if billing_unit is not None:
        changes["billing_unit"] = check_choice("billing_unit", billing_unit, BILLING_UNITS)
    if environment is not None:
        changes["environment"] = check_choice("environment", environment, ENVIRONMENTS)
    merged = check_labels(more_labels)
    if labels is not None:
        merged = check_labels({**check_labels(labels), **merged})
    return AttributeScope(changes, merged)
