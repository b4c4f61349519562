"""A synchronous facade over asyncio: one event loop in a daemon thread, owned by one log.

The ``EventLog`` interface is synchronous and nats-py is asyncio, so :class:`NatsEventLog` submits
coroutines to a loop of its own (``asyncio.run_coroutine_threadsafe``) and waits for them in the
caller's thread. Calls made through :meth:`LoopThread.call` can be cancelled all at once, which is
how ``close()`` wakes a reader that is waiting for records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from outlay._errors import BackendError, OutlayError

__all__ = ["LoopThread"]

T = TypeVar("T")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    # uvloop (installed with outlay[gateway]) cuts the loop's share of the per-event CPU cost.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """Runs coroutines on a private event loop; ``call`` waits for one, ``stop`` ends the loop."""

    def __init__(self, name: str) -> None:
        self.loop = _new_event_loop()
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._closing = False
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], translate: Callable[[Exception], Exception]) -> T:
        """Run ``coro`` and wait for it. Exceptions that are not outlay's go through ``translate``;
        :meth:`cancel_calls` (or a closed loop) makes it raise ``BackendError``."""
        with self._lock:
            if self._closing:
                coro.close()
                raise BackendError("the event log is closed")
            future = self.submit(coro)
            self._waiting.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BackendError("the event log was closed while waiting") from None
        except OutlayError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        finally:
            with self._lock:
                self._waiting.discard(future)

    def cancel_calls(self) -> None:
        """Refuse new calls and cancel the ones in progress (their callers get ``BackendError``)."""
        with self._lock:
            self._closing = True
            for future in self._waiting:
                future.cancel()

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def stop(self, timeout: float) -> None:
        """Cancel what still runs on the loop, stop it and join its thread."""
        self.cancel_calls()

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.submit(cancel_the_rest()).result(timeout=timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
