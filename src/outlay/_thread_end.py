"""Run a callback when the current thread ends: for per-thread resources (database connections)
that a program whose threads come and go would otherwise keep, one per thread it ever had."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["at_thread_end"]

T = TypeVar("T")


class _Token:
    """Lives in one thread's locals as long as the thread does."""

    __slots__ = ("__weakref__",)


def at_thread_end(
    local: threading.local, owner: T, callback: Callable[[T, Any], None], resource: Any
) -> None:
    """Call ``callback(owner, resource)`` when the calling thread ends (its ``local`` attributes
    go, and a token kept there with them), unless ``owner`` is gone by then. Called again in the
    same thread, the previous registration runs at once (its resource was replaced)."""
    token = _Token()
    local.thread_end_token = token  # replaces (and so ends) an earlier one of this thread
    weakref.finalize(token, _ended, weakref.ref(owner), callback, resource)


def _ended(owner: weakref.ref[Any], callback: Callable[[Any, Any], None], resource: Any) -> None:
    alive = owner()
    if alive is not None:
        callback(alive, resource)
