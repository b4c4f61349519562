"""``CostContext`` and the one ContextVar that holds it.

Shaped like OpenTelemetry's context API: the context is immutable, :func:`attach` makes one current
and returns a token, :func:`detach` restores the previous one (always in ``finally``). Everything else
in this package (``attribute``, ``run``, ``extract``) is a context manager on top of these two.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from outlay._errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from ._run import Run

__all__ = [
    "BILLING_UNITS",
    "ENVIRONMENTS",
    "LABEL_KEY",
    "MAX_LABELS",
    "MAX_LABEL_VALUE",
    "MAX_RUN_PATH",
    "RUN_KINDS",
    "CostContext",
    "attach",
    "current",
    "default_environment",
    "detach",
    "set_default_environment",
]

_log = logging.getLogger("outlay.context")

ENVIRONMENTS: Final = frozenset({"production", "staging", "development", "test"})
BILLING_UNITS: Final = frozenset({"user", "workspace", "feature", "campaign"})
RUN_KINDS: Final = frozenset({"agent", "tool", "llm", "retrieval", "job"})

# Same bound as CostEvent's id fields: a context value always fits the event it attributes.
MAX_VALUE: Final = 200
# Same bound as CostEvent.run_path: how many ancestors a context carries (the nearest are kept).
MAX_RUN_PATH: Final = 32

# Labels are free-form and set by whoever calls (a tenant's own baggage at the gateway, an ingested
# event): bounded, or one caller could make every event, the event log and every report carry
# megabytes. Keys are plain names like unit names (any case, dots and slashes for namespaces:
# "team", "cost.center", "example.com/tier"); values are free text of a bounded length. outlay's own
# labels (the gateway's "gateway.*", a budget decision's) fit these bounds too.
MAX_LABELS: Final = 64
LABEL_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,63}")
MAX_LABEL_VALUE: Final = 1024

_EMPTY_LABELS: Final[Mapping[str, str]] = MappingProxyType({})

# The string fields of a CostContext, in declaration order (used by validation and baggage).
STR_FIELDS: Final = (
    "tenant",
    "workspace",
    "user",
    "billing_unit",
    "feature",
    "environment",
    "request_id",
    "workflow_id",
    "run_id",
    "parent_run_id",
    "root_run_id",
    "run_name",
    "run_kind",
)


def check_str(name: str, value: object, *, error: type[InvalidInput] = InvalidInput) -> str:
    """``value`` if it is a non-empty printable string of at most MAX_VALUE characters (what a
    cost event's ids must be), else a named error."""
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE or not value.isprintable():
        raise error(
            f"must be a non-empty printable string of at most {MAX_VALUE} characters, got {value!r}",
            field=name,
        )
    return value


def check_choice(
    name: str, value: object, choices: frozenset[str], *, error: type[InvalidInput] = InvalidInput
) -> str:
    if value not in choices:
        raise error(f"must be one of {', '.join(sorted(choices))}, got {value!r}", field=name)
    return value  # type: ignore[return-value,unused-ignore]  # in a set of str, so a str


def check_labels(
    labels: object, *, error: type[InvalidInput] = InvalidInput, field: str = "labels"
) -> Mapping[str, str]:
    """``labels`` as a read-only mapping if it is within the bounds every new event's labels keep
    (at most MAX_LABELS, keys matching LABEL_KEY, values of at most MAX_LABEL_VALUE characters with a
    UTF-8 form), else an error naming ``field``. Events already stored are never checked again."""
    if not isinstance(labels, Mapping):
        raise error(f"must be a mapping of strings, got {type(labels).__name__}", field=field)
    if len(labels) > MAX_LABELS:
        raise error(f"at most {MAX_LABELS} labels, got {len(labels)}", field=field)
    for key, value in labels.items():
        if not isinstance(key, str) or LABEL_KEY.fullmatch(key) is None:
            shown = key if not isinstance(key, str) or len(key) <= 80 else key[:77] + "..."
            raise error(
                "keys must be names of 1 to 64 ASCII letters, digits and _ . : / - starting with a letter"
                f" or _, got {shown!r}",
                field=field,
            )
        if not isinstance(value, str):
            raise error(f"{key}: values must be strings, got {value!r}", field=field)
        if len(value) > MAX_LABEL_VALUE:
            raise error(
                f"{key}: values must be at most {MAX_LABEL_VALUE} characters, got {len(value)}", field=field
            )
        if not _has_utf8_form(value):
            # A lone surrogate (os.fsdecode of a non-UTF-8 name) fits no cost event, whose JSON is
            # UTF-8: refused here, not after the provider has billed a call recorded under it.
            raise error(f"{key!r}: {value!r} has no UTF-8 form (a lone surrogate)", field=field)
    return MappingProxyType(dict(labels))


def _has_utf8_form(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_run_path(
    path: object, run_id: str | None, parent_run_id: str | None, *, error: type[InvalidInput] = InvalidInput
) -> tuple[str, ...]:
    """``path`` as a tuple if it can be ``run_id``'s ancestors (ending with ``parent_run_id``)."""
    if not isinstance(path, list | tuple):
        raise error(f"must be a sequence of run ids, got {path!r}", field="run_path")
    for value in path:
        check_str("run_path", value, error=error)
    if len(path) > MAX_RUN_PATH:
        raise error(f"holds at most {MAX_RUN_PATH} run ids, got {len(path)}", field="run_path")
    if path and (run_id is None or path[-1] != parent_run_id):
        raise error("must end with the parent_run_id of the context's run", field="run_path")
    if len(set(path)) != len(path) or run_id in path:
        raise error("must not repeat a run id (a run is not its own ancestor)", field="run_path")
    return tuple(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class CostContext:
    """Who an operation is done for and which run it belongs to. Immutable.

    Every field but ``environment`` may be ``None`` (not known here). ``run`` is the in-process
    :class:`Run` currently open; it is ``None`` when the run ids came from another process through
    :func:`outlay.extract` (``run_id`` is then the remote run's id). ``run`` takes no part in
    equality: two contexts with the same fields are equal wherever they came from.
    """

    tenant: str | None = None
    workspace: str | None = None
    user: str | None = None
    billing_unit: str | None = None
    feature: str | None = None
    environment: str = "production"
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY_LABELS)
    request_id: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    run_name: str | None = None
    run_kind: str | None = None
    #: ``run_id``'s ancestors, root first, ``parent_run_id`` last (at most ``MAX_RUN_PATH``).
    run_path: tuple[str, ...] = ()
    run: Run | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in STR_FIELDS:
            value = getattr(self, name)
            if value is not None:
                check_str(name, value)
        check_choice("environment", self.environment, ENVIRONMENTS)
        if self.billing_unit is not None:
            check_choice("billing_unit", self.billing_unit, BILLING_UNITS)
        if self.run_kind is not None:
            check_choice("run_kind", self.run_kind, RUN_KINDS)
        if self.run_path:
            object.__setattr__(
                self, "run_path", check_run_path(self.run_path, self.run_id, self.parent_run_id)
            )
        object.__setattr__(self, "labels", check_labels(self.labels))

    def __hash__(self) -> int:
        # The generated hash would fail on the labels mapping; hash what equality compares.
        fields = (getattr(self, name) for name in STR_FIELDS)
        return hash((*fields, self.run_path, frozenset(self.labels.items())))


def derive(base: CostContext, changes: Mapping[str, Any]) -> CostContext:
    """A copy of ``base`` with already-validated ``changes``, skipping ``__post_init__``.

    This keeps ``run()`` enter/exit to a few microseconds: its values are generated or were
    validated when ``attribute()``/``extract()`` built them.
    """
    new = _new(CostContext)
    for name in _ALL_FIELDS:
        _set(new, name, getattr(base, name))
    for name, value in changes.items():
        _set(new, name, value)
    return new


_ALL_FIELDS: Final = (*STR_FIELDS, "labels", "run_path", "run")
_new = object.__new__
_set = object.__setattr__


def derive_run(  # positional on purpose: this is the hot path
    base: CostContext,
    environment: str,
    run_id: str,
    parent_run_id: str | None,
    root_run_id: str,
    run_name: str,
    run_kind: str,
    run_path: tuple[str, ...],
    run: Run,
) -> CostContext:
    """:func:`derive` unrolled for ``run()``, the hottest path (about half the cost of the loop)."""
    new = _new(CostContext)
    _set(new, "tenant", base.tenant)
    _set(new, "workspace", base.workspace)
    _set(new, "user", base.user)
    _set(new, "billing_unit", base.billing_unit)
    _set(new, "feature", base.feature)
    _set(new, "environment", environment)
    _set(new, "labels", base.labels)
    _set(new, "request_id", base.request_id)
    _set(new, "workflow_id", base.workflow_id)
    _set(new, "run_id", run_id)
    _set(new, "parent_run_id", parent_run_id)
    _set(new, "root_run_id", root_run_id)
    _set(new, "run_name", run_name)
    _set(new, "run_kind", run_kind)
    _set(new, "run_path", run_path)
    _set(new, "run", run)
    return new


_CURRENT: Final[ContextVar[CostContext | None]] = ContextVar("outlay.cost_context", default=None)


class _ForkHook:
    """Kept alive for multiprocessing's after-fork registry (a weak one)."""


def _empty_in_child(_: _ForkHook) -> None:
    # A forked multiprocessing child (a pool worker above all) would otherwise keep the context of
    # whichever request first made the pool fork, and charge every later job (another tenant's, or
    # one with no tenant) to it. It starts empty, as with spawn and as a thread does.
    _CURRENT.set(None)


_FORK_HOOK: Final = _ForkHook()
multiprocessing.util.register_after_fork(_FORK_HOOK, _empty_in_child)


def current() -> CostContext | None:
    """The cost context in effect here, or ``None`` outside any ``attribute``/``run``/``extract``."""
    return _CURRENT.get()


def attach(ctx: CostContext | None) -> Token[CostContext | None]:
    """Make ``ctx`` current; pass the returned token to :func:`detach` in a ``finally``."""
    return _CURRENT.set(ctx)


def detach(token: Token[CostContext | None]) -> None:
    """Restore the context that was current when ``token`` was made by :func:`attach`."""
    try:
        _CURRENT.reset(token)
    except (ValueError, RuntimeError):
        # Like OpenTelemetry: a token reset from another Context (a `with` spanning a generator
        # yield or two tasks) must not replace the caller's real exception from inside __exit__.
        _log.exception("outlay: failed to detach the cost context (entered and exited in different contexts)")


_default_env: str | None = None


def set_default_environment(environment: str | None) -> None:
    """Set the environment given to new contexts; ``None`` goes back to $OUTLAY_ENVIRONMENT or production."""
    global _default_env  # noqa: PLW0603  # one process-wide setting, like logging's root level
    if environment is not None:
        check_choice("environment", environment, ENVIRONMENTS)
    _default_env = environment


def default_environment() -> str:
    """The environment of a context created with none given: set_default_environment(),
    else $OUTLAY_ENVIRONMENT, else ``"production"``."""
    if _default_env is not None:
        return _default_env
    env = os.environ.get("OUTLAY_ENVIRONMENT")
    if not env:
        return "production"
    return check_choice("OUTLAY_ENVIRONMENT", env, ENVIRONMENTS, error=ConfigError)
