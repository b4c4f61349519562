"""``BatchingAppender``: the throughput mode, trading a small, bounded loss window for speed.

``append`` only buffers; a background thread appends batches to the log. What a kill -9 (or a
power loss) can lose is exactly what is buffered and not yet committed: never more than
``max_buffer`` events, and in steady state only events appended within the last ``max_delay``
seconds plus one commit. ``flush()`` closes the window on demand; ``close()`` and a clean interpreter
exit (``atexit``) drain it. Nothing is ever dropped on purpose: a full buffer makes ``append`` wait
(backpressure) and a failing log is retried until it accepts the batch.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from types import TracebackType
from typing import Self

from outlay._errors import BackendError, ConfigError

from ._base import EventLog, check_payload_sizes, check_payloads

__all__ = ["BatchingAppender"]

_logger = logging.getLogger("outlay.stream")

_MAX_RETRY_DELAY = 2.0


class BatchingAppender:
    """Buffers appends to ``log`` and commits them in batches from a background thread.

    A batch is committed when ``max_events`` are buffered, when the oldest buffered event is
    ``max_delay`` seconds old, or when ``flush``/``close`` asks. At most ``max_buffer`` events are
    held (an ``append`` that would pass it waits). At interpreter exit the buffer is drained for up
    to ``exit_timeout`` seconds. The appender does not own ``log``: close the log after the appender.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        max_events: int = 1000,
        max_delay: float = 0.05,
        max_buffer: int = 10_000,
        exit_timeout: float = 30.0,
    ) -> None:
        for name, value in (("max_events", max_events), ("max_buffer", max_buffer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected an integer >= 1, got {value!r}", field=name)
        if max_buffer < max_events:
            raise ConfigError(f"must be >= max_events ({max_events}), got {max_buffer}", field="max_buffer")
        for name, seconds in (("max_delay", max_delay), ("exit_timeout", exit_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < 1e6:
                raise ConfigError(f"expected a number of seconds > 0, got {seconds!r}", field=name)
        self._log = log
        self._max_events = max_events
        self._max_delay = float(max_delay)
        self._max_buffer = max_buffer
        self._exit_timeout = float(exit_timeout)
        self._cond = threading.Condition()
        # Events stay in the buffer until they are durable, so a failed batch is simply retried.
        self._buffer: deque[bytes] = deque()
        # (sequence number of the last event of an append call, when it was buffered): gives the
        # age of the oldest event not yet durable without a timestamp per event.
        self._times: deque[tuple[int, float]] = deque()
        self._accepted = 0  # events ever buffered
        self._durable = 0  # events ever committed; they are always a prefix of the accepted ones
        self._flush_target = 0
        self._closing = False
        self._closed = False
        self._exit_failed = False  # the exit drain timed out: the process is ending, do not wait again
        self._error: Exception | None = None  # the last failure of the log, until a commit succeeds
        #: Called (on the appender's thread) after each batch is committed: what waits for its
        #: events to be durable (a journal of calls in flight) need not poll.
        self.on_durable: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="outlay-batching-appender", daemon=True)
        self._thread.start()
        # A daemon thread is killed at exit without a word; atexit is what drains a clean exit, and
        # multiprocessing's finalizers what drains a forked worker (it leaves through os._exit).
        atexit.register(self._drain_at_exit)
        self._finalizer = multiprocessing.util.Finalize(self, self._drain_at_exit, exitpriority=10)

    @property
    def pending(self) -> int:
        """Events buffered and not yet durable: what a kill -9 right now would lose."""
        with self._cond:
            return self._accepted - self._durable

    @property
    def accepted(self) -> int:
        """Events ever buffered: once :attr:`durable` reaches this count, all of them are durable."""
        with self._cond:
            return self._accepted

    @property
    def durable(self) -> int:
        """Events ever committed (always the first ``durable`` of those accepted)."""
        with self._cond:
            return self._durable

    def append(self, payloads: Sequence[bytes]) -> None:
        """Buffer ``payloads``; returns at once unless the buffer is full (then waits for room).

        Not durable on return: see the class docstring for the loss window, and :meth:`flush`.
        A single call larger than ``max_buffer`` waits for an empty buffer.
        """
        items = check_payloads(payloads)
        # Refused now, as the log would refuse it: once buffered, a payload the log can never take
        # would be retried forever and hold back every event after it.
        check_payload_sizes(items, self._log.max_payload(), "the event log's max_payload")
        with self._cond:
            self._check_open()
            if not items:
                return
            while self._buffer and len(self._buffer) + len(items) > self._max_buffer:
                self._cond.wait()
                self._check_open()
            self._buffer.extend(items)
            self._accepted += len(items)
            self._times.append((self._accepted, time.monotonic()))
            if len(self._buffer) >= self._max_events or len(self._times) == 1:
                self._cond.notify_all()  # a full batch to write, or a new max_delay clock to start

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event buffered before this call is durable.

        Raises ``BackendError`` (chaining the log's last error) if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._accepted
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            while self._durable < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BackendError(
                        f"flush timed out: {target - self._durable} events are not durable yet"
                        + (f" (last error: {self._error})" if self._error else "")
                    ) from self._error
                self._cond.wait(remaining)

    def close(self, timeout: float | None = None) -> None:
        """Drain the buffer into the log and stop the background thread. Idempotent.

        Raises ``BackendError`` if the buffer is not drained within ``timeout`` seconds; the thread
        keeps retrying, and a later ``close`` may wait again.
        """
        with self._cond:
            if self._closed:
                return
            if self._exit_failed:  # the exit drain already waited its exit_timeout: no second wait
                raise BackendError(f"close gave up at exit: {self._accepted - self._durable} events lost")
            self._closing = True
            self._cond.notify_all()  # the thread drains, and appends waiting for room give up
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                raise BackendError(
                    f"close timed out: {self._accepted - self._durable} events are not durable yet"
                    + (f" (last error: {self._error})" if self._error else "")
                ) from self._error
        with self._cond:
            self._closed = True
        atexit.unregister(self._drain_at_exit)
        self._finalizer.cancel()

    def abandon(self) -> None:
        """Forget this appender in a forked child: its buffer holds the parent's events and its
        thread runs in the parent only. Nothing is drained from here, at exit either."""
        atexit.unregister(self._drain_at_exit)
        self._finalizer.cancel()

    def _check_open(self) -> None:
        if self._closing:
            raise BackendError("the batching appender is closed")

    def _drain_at_exit(self) -> None:
        if self._exit_failed:  # already given up (atexit and multiprocessing's finalizers both call)
            return
        try:
            self.close(timeout=self._exit_timeout)
        except BackendError as exc:
            self._exit_failed = True
            _logger.error("outlay: events lost at interpreter exit: %s", exc)

    # -- background thread -----------------------------------------------------------------------

    def _next_batch(self) -> list[bytes] | None:
        """Wait until a batch is due and return it; ``None`` once closing with nothing left."""
        with self._cond:
            while True:
                if not self._buffer:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                oldest = self._times[0][1]
                wait = oldest + self._max_delay - time.monotonic()
                if (
                    wait <= 0
                    or len(self._buffer) >= self._max_events
                    or self._closing
                    or self._flush_target > self._durable
                ):
                    return list(islice(self._buffer, self._max_events))
                self._cond.wait(wait)

    def _run(self) -> None:
        retry_delay = 0.05
        while (batch := self._next_batch()) is not None:
            try:
                self._log.append(batch)
            except Exception as exc:
                # Never drop: keep the batch at the head of the buffer and try again, backing off.
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                _logger.warning("outlay: event log append failed, retrying in %.2fs: %s", retry_delay, exc)
                time.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, _MAX_RETRY_DELAY)
                continue
            retry_delay = 0.05
            with self._cond:
                for _ in range(len(batch)):
                    self._buffer.popleft()
                self._durable += len(batch)
                while self._times and self._times[0][0] <= self._durable:
                    self._times.popleft()
                self._error = None
                self._cond.notify_all()  # flush() waiters, and appends waiting for room
            if self.on_durable is not None:
                try:
                    self.on_durable()
                except Exception:  # (its own business: the events are durable all the same)
                    _logger.exception("outlay: the event log's on_durable callback failed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BatchingAppender({self._log!r}, pending={self.pending})"
