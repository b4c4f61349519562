"""The process-wide default pipeline behind ``outlay.configure``/``outlay.record``/``outlay.reports``.

Like logging's root logger: one default, created on first use from the environment (``OUTLAY_URL``
and friends, see :mod:`outlay._runtime`) or explicitly by :func:`configure`, and closed — draining
any batching buffer into the durable log — at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import BackendError
from ._recording import Metered
from ._runtime import Outlay
from ._usage import Usage
from .events import CostEvent

if TYPE_CHECKING:
    from .reporting import Reports

__all__ = [
    "configure",
    "flush",
    "get_outlay",
    "meter",
    "record",
    "record_llm",
    "record_tool",
    "record_usage",
    "reports",
    "shutdown",
]

_default: Outlay | None = None
_lock = threading.Lock()
_log = logging.getLogger("outlay")
#: How long the interpreter's exit waits for a batching buffer to drain (as BatchingAppender's).
EXIT_TIMEOUT = 30.0


def configure(url: str | os.PathLike[str] | None = None, **options: Any) -> Outlay:
    """Build the default pipeline (closing any previous one) and return it.

    ``url``: the home/ledger URL (default ``OUTLAY_URL`` or ``./.outlay/outlay.db``); options are
    those of :class:`outlay.Outlay`: ``mode="durable"|"batching"``, ``prices=`` (an overrides TOML),
    ``stream_url=``, ``ledger_url=``, ``service=``, ``require_tenant=``, ``journal=`` (where metered
    calls are noted while in flight, so one whose process is killed is still recorded; ``False``:
    none).
    """
    global _default  # the one process-wide default
    instance = Outlay(url, **options)
    with _lock:
        previous, _default = _default, instance
    if previous is not None:
        previous.close()
    return instance


def get_outlay() -> Outlay:
    """The default pipeline, created from the environment on first use."""
    global _default  # noqa: PLW0603
    instance = _default
    if instance is None:
        with _lock:
            if _default is None:
                _default = Outlay()
            instance = _default
    return instance


def record(event: CostEvent) -> CostEvent:
    """Append a ready-made event to the default pipeline (durable on return in durable mode)."""
    return get_outlay().record(event)


def record_llm(**kwargs: Any) -> CostEvent:
    """Record an LLM call in the current context. See :meth:`outlay.Recorder.record_llm`."""
    return get_outlay().record_llm(**kwargs)


def record_tool(name: str, quantity: object = 1, **kwargs: Any) -> CostEvent:
    """Record a tool call (a custom unit). See :meth:`outlay.Recorder.record_tool`."""
    return get_outlay().record_tool(name, quantity, **kwargs)


def record_usage(*, usage: Usage | Mapping[str, Any], **kwargs: Any) -> CostEvent:
    """Record any billable operation. See :meth:`outlay.Recorder.record_usage`."""
    return get_outlay().record_usage(usage=usage, **kwargs)


@contextmanager
def meter(**kwargs: Any) -> Iterator[Metered]:
    """Reserve a budget estimate, run the block, record and settle. See :meth:`outlay.Recorder.meter`."""
    with get_outlay().recorder.meter(**kwargs) as metered:
        yield metered


def flush(timeout: float | None = None) -> None:
    """Make every event recorded so far durable (batching mode); a no-op in durable mode.

    ``timeout``: the seconds to wait for a log that keeps failing (a full disk) before raising
    ``BackendError`` naming how many events are not durable; by default, as long as it takes.
    """
    if _default is not None:
        _default.flush(timeout)


def reports() -> Reports:
    """Reports over the default ledger (the embedded writer catches up first)."""
    return get_outlay().reports()


def shutdown() -> None:
    """Close the default pipeline: drain buffers, let the embedded writer catch up."""
    global _default
    with _lock:
        instance, _default = _default, None
    if instance is not None:
        instance.close()


def _shutdown_at_exit() -> None:
    # Bounded: a busy event log must not hold the interpreter's exit forever. The closed pipeline
    # stays the default: a daemon thread still recording now gets its "closed" error, where a
    # default rebuilt from the environment would open ./.outlay/ (not the configured home) and
    # take the event there, out of the configured ledger.
    with _lock:
        instance = _default
    if instance is None:
        return
    try:
        instance.close(timeout=EXIT_TIMEOUT)
    except BackendError as exc:
        _log.error("outlay: events lost at interpreter exit: %s", exc)


def _after_fork_in_child() -> None:
    global _lock  # noqa: PLW0603  # the parent's may have been held by a thread gone here
    _lock = threading.Lock()


atexit.register(_shutdown_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
