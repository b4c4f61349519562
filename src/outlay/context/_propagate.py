"""Carrying the cost context across threads (``wrap``) and processes (``inject``/``extract``).

Carriers follow OpenTelemetry's TextMap propagator: a getter reads a header from a carrier and a
setter writes one. The defaults handle a mapping of headers (looked up case-insensitively, since
HTTP servers hand over ``Baggage`` as often as ``baggage``) and a list of ``(name, value)`` pairs
(message headers on queues); pass ``getter=``/``setter=`` for anything else.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
    MutableMapping,
    MutableSequence,
    Sequence,
)
from typing import Any, Final, Literal, ParamSpec, Self, TypeVar, cast

from outlay._errors import InvalidBaggage, InvalidInput

from ._baggage import MAX_BYTES, MAX_MEMBERS, decode_context, encode_context, is_outlay, parse
from ._context import _CURRENT, CostContext, attach, current, detach
from ._scope import Scope, is_async_callable, is_async_gen_callable, is_gen_callable, isolated

__all__ = ["ExtractScope", "Getter", "Setter", "extract", "inject", "wrap"]

_log = logging.getLogger("outlay.context")

HEADER: Final = "baggage"
_OWS: Final = " \t"

#: Reads header ``name`` from a carrier: its value, its values, or None when absent.
Getter = Callable[[Any, str], "str | bytes | Sequence[str | bytes] | None"]
#: Writes header ``name`` with ``value`` into a carrier, replacing any previous value.
Setter = Callable[[Any, str, str], None]

P = ParamSpec("P")
R = TypeVar("R")


def _name(key: object) -> str | None:
    if isinstance(key, str):
        return key.lower()
    if isinstance(key, bytes):
        return key.decode("latin-1").lower()
    return None


def default_getter(carrier: object, name: str) -> list[str | bytes]:
    """Every value of header ``name`` (any case) in a mapping or a list of (name, value) pairs.
    ``None`` is a message without headers (nats-py's ``msg.headers``, confluent-kafka's
    ``msg.headers()``, pika's ``properties.headers``): it has none to give."""
    if carrier is None:
        return []
    if isinstance(carrier, Mapping):
        pairs: Any = carrier.items()
    elif isinstance(carrier, Sequence) and not isinstance(carrier, str | bytes):
        pairs = carrier
    elif callable(getattr(carrier, "items", None)) and not isinstance(carrier, str | bytes):
        # Header classes that are dict-like without being Mappings: werkzeug's Headers (Flask's
        # request.headers), whose items() are its (name, value) pairs, repeated names included.
        pairs = carrier.items()  # type: ignore[attr-defined]
    else:
        raise InvalidInput(
            f"a mapping or a list of (name, value) pairs is expected, got {type(carrier).__name__}; "
            "pass getter= for other carriers",
            field="carrier",
        )
    found: list[str | bytes] = []
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise InvalidInput(f"expected (name, value) pairs, got {pair!r}", field="carrier") from None
        if _name(key) == name:
            found.extend(value if isinstance(value, list | tuple) else [value])
    return found


def default_setter(carrier: object, name: str, value: str) -> None:
    """Set header ``name`` in a mutable mapping or list of pairs, dropping its other spellings."""
    # Some header classes (starlette's MutableHeaders) are writable Mappings but not MutableMappings.
    if isinstance(carrier, MutableMapping) or (
        isinstance(carrier, Mapping) and hasattr(carrier, "__setitem__")
    ):
        writable = cast(MutableMapping[Any, Any], carrier)
        for key in [key for key in writable if _name(key) == name and key != name]:
            del writable[key]
        writable[name] = value
    elif isinstance(carrier, MutableSequence):
        carrier[:] = [pair for pair in carrier if _name(pair[0]) != name]
        carrier.append((name, value))
    else:
        raise InvalidInput(
            f"a mutable mapping or list of (name, value) pairs is expected, got {type(carrier).__name__}; "
            "pass setter= for other carriers",
            field="carrier",
        )


def _read(carrier: object, getter: Getter | None) -> str:
    raw = (getter or default_getter)(carrier, HEADER)
    if raw is None:
        return ""
    values = [raw] if isinstance(raw, str | bytes) else raw
    texts: list[str] = []
    for value in values:
        if value is None:  # a header without a value (Kafka allows it): no baggage there
            continue
        if isinstance(value, bytes):
            try:
                texts.append(value.decode("ascii"))
            except UnicodeDecodeError:
                raise InvalidBaggage("the header is not ASCII", field="baggage") from None
        elif isinstance(value, str):
            texts.append(value)
        else:  # malformed carrier: invalid baggage, which on_error="ignore" ignores
            raise InvalidBaggage(f"the baggage header is a {type(value).__name__}, not text", field="baggage")
    # Several baggage headers are one list (RFC 7230 §3.2.2), so they join with commas.
    return ",".join(texts)


def inject(
    carrier: object,
    setter: Setter | None = None,
    *,
    getter: Getter | None = None,
    context: CostContext | None = None,
) -> None:
    """Write the current (or the given) cost context into ``carrier``'s ``baggage`` header.

    Members of other owners already in the carrier are kept as they are; earlier ``outlay.``
    members are replaced. Nothing is written outside any context. Raises
    :class:`~outlay.InvalidBaggage` when the resulting header would be over the W3C limits (8192
    bytes, 180 list-members): shedding members silently would lose attribution.
    """
    ctx = context if context is not None else current()
    if ctx is None:
        return
    foreign = [
        member.strip(_OWS)
        for member in _read(carrier, getter).split(",")
        if member.strip(_OWS) and not is_outlay(member.split("=", 1)[0].strip(_OWS))
    ]
    members = foreign + encode_context(ctx)
    header = ",".join(members)
    size = len(header.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES or len(members) > MAX_MEMBERS:
        raise InvalidBaggage(
            f"the cost context does not fit: {size} bytes in {len(members)} list-members "
            f"({len(foreign)} of them from other owners); the limits are {MAX_BYTES} bytes and "
            f"{MAX_MEMBERS} list-members — carry fewer or shorter labels",
            field="baggage",
        )
    (setter or default_setter)(carrier, HEADER, header)


class ExtractScope(Scope["CostContext | None"]):
    """Returned by :func:`extract`; entering it yields the context in effect inside the block."""

    __slots__ = ("context",)

    def __init__(self, context: CostContext | None) -> None:
        super().__init__()
        #: The context read from the carrier, or None when it carried none (or it was ignored).
        self.context = context

    def _open(self) -> CostContext | None:
        if self.context is None:
            return current()
        self._token = attach(self.context)
        return self.context

    def _fresh(self) -> Self:
        return type(self)(self.context)


def extract(
    carrier: object,
    getter: Getter | None = None,
    *,
    on_error: Literal["raise", "ignore"] = "raise",
) -> ExtractScope:
    """Restore the cost context that :func:`inject` put into ``carrier``, for a ``with`` block.

    Runs opened inside nest under the sender's run. A carrier with no outlay members changes
    nothing. The header is read and checked here: malformed or oversized baggage raises
    :class:`~outlay.InvalidBaggage`, or with ``on_error="ignore"`` is logged as a warning and
    nothing of it is applied.
    """
    if on_error not in ("raise", "ignore"):
        raise InvalidInput(f"must be 'raise' or 'ignore', got {on_error!r}", field="on_error")
    try:
        ctx = decode_context(parse(_read(carrier, getter)))
    except InvalidBaggage as error:
        if on_error == "raise":
            raise
        _log.warning("outlay: ignoring the baggage header, it is invalid: %s", error)
        ctx = None
    return ExtractScope(ctx)


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the caller's contexts, for a thread pool or ``threading.Thread``.

    A new thread starts with an empty context, so without this it sees no cost context (and its
    spend would be unattributed). The contexts are copied now, when ``wrap`` is called; each call
    runs in its own copy of them, so calls may run concurrently and cannot change each other's
    context or the caller's. A generator function's every step runs in its call's copy, wherever
    the generator is consumed. An async generator function is refused (``InvalidInput``), as by the
    decorators: its steps run in whatever task consumes it, never in the captured contexts.
    """
    if is_async_gen_callable(fn):
        # Calling it only builds the generator; wrapping that call would carry nothing into its body.
        raise InvalidInput(
            "async generator functions cannot be wrapped: their steps run in the consuming task's "
            "context; capture the context (wrap a coroutine function, or extract) around the work instead",
            field="fn",
        )
    captured = _CURRENT.get()
    if is_async_callable(fn):
        # A coroutine runs in the context of the task that awaits it, so re-attach ours inside.

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            token = attach(captured)
            try:
                return await cast(Awaitable[Any], fn(*args, **kwargs))
            finally:
                detach(token)

        return cast(Callable[P, R], call_async)

    snapshot = contextvars.copy_context()
    if is_gen_callable(fn):

        @functools.wraps(fn)
        def call_gen(*args: Any, **kwargs: Any) -> Any:
            # Each step in this call's copy of the contexts, wherever (and in whatever context) the
            # generator is consumed.
            return isolated(cast(Generator[Any, Any, Any], fn(*args, **kwargs)), snapshot.copy())

        return cast(Callable[P, R], call_gen)

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        # Context.run refuses to enter one Context twice at once; a cheap copy per call avoids that.
        result = snapshot.copy().run(fn, *args, **kwargs)
        if inspect.iscoroutine(result):
            # A plain function that returned a coroutine: its body runs only when awaited, in the
            # awaiting task's context; carry the captured one into it.
            return cast(R, _awaited_in(result, captured))
        return result

    return call


async def _awaited_in(coroutine: Coroutine[Any, Any, R], ctx: CostContext | None) -> R:
    token = attach(ctx)
    try:
        return await coroutine
    finally:
        detach(token)
