"""The context-manager-and-decorator shape shared by ``attribute``, ``run`` and ``extract``."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from contextvars import Token
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, cast

from outlay._errors import InvalidInput

from ._context import CostContext, detach

__all__ = ["Scope", "is_async_callable", "is_async_gen_callable", "is_gen_callable", "isolated"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class Scope(Generic[T]):
    """Attaches a context on enter and restores the previous one on exit (even on error).

    Usable as ``with``, ``async with`` or as a decorator of a sync or async function; a decorated
    function gets a fresh scope per call (opened inside the coroutine for async functions, so each
    awaiting task gets its own). One scope object is entered at most once at a time.
    """

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token: Token[CostContext | None] | None = None

    # Subclasses: _open attaches and sets self._token (or leaves it None for a no-op scope).
    def _open(self) -> T:
        raise NotImplementedError

    def _close(self, exc: BaseException | None) -> None:
        token, self._token = self._token, None
        if token is not None:
            detach(token)

    def _fresh(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> T:
        if self._token is not None:
            raise RuntimeError(f"this {type(self).__name__} is already entered; create a new one per `with`")
        return self._open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc)

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if is_async_gen_callable(fn):
            # A context set inside an async generator would leak to its consumer between yields.
            raise InvalidInput(
                "async generator functions cannot be decorated; open the scope around the work"
                " between two yields (never around a yield)",
                field="fn",
            )
        if is_gen_callable(fn):

            def body(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                with self._fresh():
                    return (yield from cast(Generator[Any, Any, Any], fn(*args, **kwargs)))

            @functools.wraps(fn)
            def call_gen(*args: Any, **kwargs: Any) -> Any:
                # Every step runs in a copy of the caller's contexts: the scope stays the
                # generator's, and never leaks to its consumer between yields.
                return isolated(body(*args, **kwargs), contextvars.copy_context())

            return cast(Callable[P, R], call_gen)
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await cast(Awaitable[Any], fn(*args, **kwargs))

            return cast(Callable[P, R], call_async)

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return fn(*args, **kwargs)

        return call


def _dunder_call(fn: object) -> object:
    """The ``__call__`` of a callable object (an agent tool class), or None for a function."""
    return type(fn).__call__ if callable(fn) and not inspect.isroutine(fn) else None


def is_gen_callable(fn: object) -> bool:
    """A generator function, or an object whose ``__call__`` is one: calling it only builds the
    generator, whose body runs step by step wherever it is consumed."""
    return inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(_dunder_call(fn))


def is_async_gen_callable(fn: object) -> bool:
    """An async generator function, or an object whose ``__call__`` is one."""
    return inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(_dunder_call(fn))


def is_async_callable(fn: object) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (a class with ``async def
    __call__``): calling it only builds a coroutine, whose body runs when it is awaited."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(_dunder_call(fn))


def isolated(gen: Generator[T, Any, R], ctx: contextvars.Context) -> Generator[T, Any, R]:
    """``gen`` with each of its steps (next, send, throw, close) run inside ``ctx``: what it
    attaches stays in ``ctx`` instead of showing in its consumer's context between yields."""
    try:
        value = ctx.run(next, gen)
    except StopIteration as stop:
        return cast(R, stop.value)
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            ctx.run(gen.close)
            raise
        except BaseException as exc:  # thrown in by the consumer: the generator may handle it
            try:
                value = ctx.run(gen.throw, exc)
            except StopIteration as stop:
                return cast(R, stop.value)
        else:
            try:
                value = ctx.run(gen.send, sent)
            except StopIteration as stop:
                return cast(R, stop.value)
