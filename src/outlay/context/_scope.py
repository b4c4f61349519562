"""The context-manager-and-decorator shape shared by ``attribute``, ``run`` and ``extract``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, cast

from outlay._errors import InvalidInput

from ._context import CostContext, detach

__all__ = ["Scope"]

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
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # A context set inside a generator leaks to the consumer between yields; refuse rather
            # than attribute the consumer's work to the wrong run.
            raise InvalidInput(
                "generator functions cannot be decorated; use `with` inside the generator body",
                field="fn",
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)

            return cast(Callable[P, R], call_async)

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return fn(*args, **kwargs)

        return call
