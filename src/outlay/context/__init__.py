"""The cost context: who work is done for and which run it belongs to, carried everywhere it goes.

``attribute()`` and ``run()`` set it, ``current()`` reads it, ``wrap()`` carries it into threads and
``inject()``/``extract()`` across processes as W3C baggage. See docs/context.md.
"""

from __future__ import annotations

from ._attribute import AttributeScope, attribute
from ._baggage import MAX_BYTES, MAX_MEMBERS
from ._context import (
    BILLING_UNITS,
    ENVIRONMENTS,
    RUN_KINDS,
    CostContext,
    attach,
    current,
    default_environment,
    detach,
    set_default_environment,
)
from ._propagate import ExtractScope, Getter, Setter, extract, inject, wrap
from ._run import Run, RunListener, RunScope, add_run_listener, remove_run_listener, run

__all__ = [
    "BILLING_UNITS",
    "ENVIRONMENTS",
    "MAX_BYTES",
    "MAX_MEMBERS",
    "RUN_KINDS",
    "AttributeScope",
    "CostContext",
    "ExtractScope",
    "Getter",
    "Run",
    "RunListener",
    "RunScope",
    "Setter",
    "add_run_listener",
    "attach",
    "attribute",
    "current",
    "default_environment",
    "detach",
    "extract",
    "inject",
    "remove_run_listener",
    "run",
    "set_default_environment",
    "wrap",
]
