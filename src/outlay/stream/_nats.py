"""The distributed event log: one NATS JetStream stream, durable pull consumers, a local spool.

``append`` publishes every payload with ``Nats-Msg-Id`` = event_id, pipelined, and returns once
JetStream acknowledged all of them: offsets are the stream sequences from the PubAcks (a duplicate
within the stream's ``duplicate_window`` gets the sequence of the first copy). When NATS does not
acknowledge (unreachable, timeout), the payloads go to the producer's SQLite spool instead, fsynced
before ``append`` returns, and a background task re-publishes them in order once NATS is back.

The ``EventLog`` interface is synchronous; nats-py is asyncio. The log owns one event loop running
in a daemon thread and submits coroutines to it; ``close()`` drains and stops it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from nats.js.manager import JetStreamManager

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput

from ._base import (
    EventLog,
    LogRecord,
    check_consumer,
    check_offset,
    check_payload_sizes,
    check_payloads,
    check_read_args,
)
from ._nats_config import NatsSettings, url_options
from ._nats_consumer import PullConsumer
from ._nats_loop import LoopThread
from ._nats_publish import Publisher
from ._nats_route import Outgoing, durable_name, route
from ._spool import Spool

__all__ = ["NatsEventLog"]

_logger = logging.getLogger("outlay.stream")

T = TypeVar("T")

_DRAIN_BATCH: Final = 1000
_RETRY_INTERVAL: Final = 1.0
# Failures after which a message may simply be published again (spooled): NATS is not there.
_TRANSIENT: Final = (
    asyncio.TimeoutError,
    OSError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.TooManyStalledMsgsError,
    BackendUnavailable,
)


class NatsEventLog(EventLog):
    """An :class:`EventLog` on a NATS JetStream stream (see ``docs/nats.md``).

    Offsets are JetStream stream sequences. Records appended while NATS is unreachable are spooled
    to ``spool_path`` and get offset ``0`` from ``append`` (their real offset is only known once
    the spool drains); without a spool such an ``append`` raises :class:`BackendUnavailable`.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = "OUTLAY_EVENTS",
        subject_prefix: str = "outlay.events",
        spool_path: str | os.PathLike[str] | None = None,
        duplicate_window: float = 120.0,
        ack_wait: float = 30.0,
        max_ack_pending: int = 50_000,
        replicas: int = 1,
        timeout: float = 5.0,
        drain_timeout: float = 10.0,
    ) -> None:
        self._cfg = NatsSettings.check(
            url,
            stream=stream,
            subject_prefix=subject_prefix,
            duplicate_window=duplicate_window,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            replicas=replicas,
            timeout=timeout,
            drain_timeout=drain_timeout,
        )
        self._lock = threading.Condition()
        self._closed = False
        self._active = 0  # appends in progress; close() waits for them
        self._spool = Spool(spool_path) if spool_path is not None else None
        self._nc: Client | None = None
        self._publisher: Publisher | None = None
        self._jsm: JetStreamManager | None = None
        self._stream_ready = False
        self._consumers: dict[str, PullConsumer] = {}
        self._runner = LoopThread(f"outlay-nats-{self._cfg.stream}")
        self._loop = self._runner.loop
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        try:
            self._submit(self._prepare()).result()
        except BaseException as exc:
            if self._spool is None or not isinstance(exc, BackendUnavailable):
                self._submit(self._disconnect()).result()
                self._stop_loop()
                raise
            _logger.warning("%s; spooling events to %s until it is back", exc, self._spool.path)
        self._submit(self._start_supervisor()).result()

    @classmethod
    def from_url(cls, url: str) -> NatsEventLog:
        """The log named by ``nats://host:4222[,nats://host2:4222][?stream=S&subject_prefix=P&spool=PATH
        &ack_wait=SECONDS&duplicate_window=SECONDS&timeout=SECONDS]``."""
        servers, options = url_options(url)
        return cls(servers, **options)  # type: ignore[arg-type]

    @property
    def stream(self) -> str:
        return self._cfg.stream

    @property
    def spooled(self) -> int:
        """Events waiting in the local spool (0 without a spool)."""
        return len(self._spool) if self._spool is not None else 0

    # -- the loop thread -------------------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return self._runner.submit(coro)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait; close() cancels it (BackendError); errors translated."""
        return self._runner.call(coro, self._translate)

    def _translate(self, exc: BaseException) -> Exception:
        where = f"NATS at {self._cfg.where} (stream {self._cfg.stream})"
        if isinstance(exc, _TRANSIENT):
            return BackendUnavailable(f"{where} is unreachable: {type(exc).__name__}: {exc}")
        return BackendError(f"{where} failed: {type(exc).__name__}: {exc}")

    def _stop_loop(self) -> None:
        self._runner.stop(self._cfg.timeout)
        if self._spool is not None:
            self._spool.close()

    # -- connection and stream -------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Connect (if not yet) and make sure the stream exists; BackendUnavailable if unreachable."""
        if self._nc is None or self._nc.is_closed:
            try:
                self._nc = await asyncio.wait_for(self._cfg.connect(self._on_reconnect), self._cfg.timeout)
            except Exception as exc:
                raise self._translate(exc) from exc
            self._jsm = self._nc.jsm(timeout=self._cfg.timeout)
            self._publisher = Publisher(self._nc, self._cfg.timeout)
            await self._publisher.start()
        if not self._stream_ready:
            try:
                await self._ensure_stream()
            except (BackendError, ConfigError):
                raise
            except Exception as exc:
                raise self._translate(exc) from exc
            self._stream_ready = True

    async def _ensure_stream(self) -> None:
        assert self._jsm is not None
        wanted = f"{self._cfg.subject_prefix}.>"
        try:
            info = await self._jsm.stream_info(self._cfg.stream)
        except NotFoundError:
            await self._jsm.add_stream(self._cfg.stream_config())
            return
        if wanted not in (info.config.subjects or []):
            raise ConfigError(
                f"stream {self._cfg.stream!r} exists with subjects {info.config.subjects}, not {wanted!r}",
                field="stream",
            )

    async def _on_reconnect(self) -> None:
        self._wake.set()

    def _connected(self) -> tuple[Client, JetStreamManager]:
        if self._nc is None or self._jsm is None or not self._nc.is_connected:
            raise BackendUnavailable(f"NATS at {self._cfg.where} is not connected")
        return self._nc, self._jsm

    # -- producing -------------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        items = check_payloads(payloads)
        with self._lock:
            if self._closed:
                raise BackendError("the event log is closed")
            self._active += 1
        try:
            if not items:
                return []
            nc = self._nc
            # Also while disconnected: a spooled payload the server refuses would block the spool.
            check_payload_sizes(items, self.max_payload(), "the NATS server's max_payload")
            outgoing = [route(p, self._cfg.subject_prefix) for p in items]
            if self._spool is not None and len(self._spool) and not (nc is not None and nc.is_connected):
                # Behind what is already spooled, so that this producer's events stay in order.
                self._spool.add(outgoing)
                self._runner.call_soon(self._wake.set)
                return [0] * len(outgoing)
            try:
                results = self._submit(self._send(outgoing)).result()
            except (BackendError, InvalidInput):
                raise
            except Exception as exc:
                raise self._translate(exc) from exc
            return self._settle(outgoing, results)
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    def max_payload(self) -> int | None:
        """The server's ``max_payload`` (as it last said, while disconnected)."""
        nc = self._nc
        return None if nc is None else int(nc.max_payload)

    def _settle(self, outgoing: list[Outgoing], results: list[int | BaseException]) -> list[int]:
        failed = [
            (item, r) for item, r in zip(outgoing, results, strict=True) if isinstance(r, BaseException)
        ]
        if failed:
            permanent = [exc for _, exc in failed if not isinstance(exc, _TRANSIENT)]
            if permanent:
                raise self._translate(permanent[0]) from permanent[0]
            if self._spool is None:
                raise BackendUnavailable(
                    f"NATS at {self._cfg.where} did not acknowledge {len(failed)} of {len(outgoing)} events"
                    " and there is no spool; appending them again is safe (Nats-Msg-Id deduplicates)"
                ) from failed[0][1]
            self._spool.add([item for item, _ in failed])
            self._runner.call_soon(self._wake.set)
        return [r if isinstance(r, int) else 0 for r in results]

    async def _send(self, items: Sequence[Outgoing]) -> list[int | BaseException]:
        # Events spooled earlier go first (this producer's events stay in order), and waiting for
        # them is the backpressure that lets the spool drain while producers keep going.
        spool, deadline = self._spool, self._loop.time() + self._cfg.timeout
        if spool is not None and len(spool) and not await self._drain(deadline):
            return [BackendUnavailable("the spool is still draining")] * len(items)
        return await self._publish(items)

    async def _publish(self, items: Sequence[Outgoing]) -> list[int | BaseException]:
        """Publish all of ``items`` at once and gather their PubAcks: a sequence or the failure."""
        nc, publisher = self._nc, self._publisher
        if nc is None or publisher is None or not nc.is_connected or not self._stream_ready:
            return [BackendUnavailable("not connected")] * len(items)
        results = await publisher.publish(items)
        if any(isinstance(r, nats.js.errors.NoStreamResponseError) for r in results):
            self._stream_ready = False  # the stream is gone (a server with fresh storage): recreate
            self._wake.set()
        return results

    async def _start_supervisor(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        """Reconnect when the first connection never happened, and drain the spool when NATS is up."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _RETRY_INTERVAL)
            self._wake.clear()
            try:
                await self._prepare()
                if self._spool is not None and len(self._spool) and self._nc and self._nc.is_connected:
                    await self._drain()
            except Exception as exc:
                _logger.debug("NATS event log: %s", exc)

    async def _drain(self, deadline: float | None = None) -> bool:
        """Re-publish the spool in order until it is empty (True) or a publish fails (False)."""
        assert self._spool is not None
        spool = self._spool
        async with self._drain_lock:
            while rows := await asyncio.to_thread(spool.peek, _DRAIN_BATCH):
                if deadline is not None and self._loop.time() > deadline:
                    return False
                results = await self._publish([item for _, item in rows])
                done = [row_id for (row_id, _), r in zip(rows, results, strict=True) if isinstance(r, int)]
                if done:
                    await asyncio.to_thread(spool.remove, done)
                if len(done) < len(rows):
                    failure = next(r for r in results if isinstance(r, BaseException))
                    _logger.info("NATS spool: %d events still waiting (%s)", len(spool), failure)
                    return False
            return True

    # -- consuming -------------------------------------------------------------------------------

    async def _consumer(self, consumer: str) -> PullConsumer:
        state = self._consumers.get(consumer)
        if state is None:
            nc, jsm = self._connected()
            state = PullConsumer(nc, jsm, self._cfg.stream, durable_name(consumer), self._cfg.timeout)
            await state.start(self._cfg.consumer_config(state.durable))
            self._consumers[consumer] = state
        return state

    def register(self, consumer: str) -> None:
        check_consumer(consumer)
        self._call(self._consumer(consumer))

    def read(self, consumer: str, max_records: int = 1000, timeout: float = 0.0) -> list[LogRecord]:
        check_consumer(consumer)
        check_read_args(max_records, timeout)

        async def read() -> list[LogRecord]:
            self._connected()
            state = await self._consumer(consumer)
            try:
                # A pull's batch is a 64-bit integer on the wire (and more is "everything" anyway).
                return await state.read(min(max_records, 2**62), float(timeout))
            except BackendError:
                await self._forget_if_gone(consumer, state)
                raise

        return self._call(read())

    async def _forget_if_gone(self, consumer: str, state: PullConsumer) -> None:
        """A consumer deleted on the server (by an operator, or a server that lost its storage) is
        forgotten here, so that the next read creates it again, as a new process would."""
        if state.gone and self._consumers.get(consumer) is state:
            del self._consumers[consumer]
            await state.forget()

    def ack(self, consumer: str, offset: int) -> None:
        check_consumer(consumer)
        check_offset(offset, "offset")

        async def ack() -> None:
            state = await self._consumer(consumer)
            end = floor = 0
            if offset > state.highest:
                end = await self._end_offset()
                floor = await self._ack_floor(state.durable)
            try:
                await state.ack(offset, end, floor)
            except BackendError:
                await self._forget_if_gone(consumer, state)
                raise

        self._call(ack())

    async def _ack_floor(self, durable: str) -> int:
        _, jsm = self._connected()
        try:
            info = await jsm.consumer_info(self._cfg.stream, durable)
        except NotFoundError:
            return 0
        return info.ack_floor.stream_seq if info.ack_floor else 0

    def committed(self, consumer: str) -> int:
        check_consumer(consumer)
        return self._call(self._ack_floor(durable_name(consumer)))

    async def _end_offset(self) -> int:
        _, jsm = self._connected()
        info = await jsm.stream_info(self._cfg.stream)
        return info.state.last_seq

    def end_offset(self) -> int:
        return self._call(self._end_offset())

    def truncate(self, before_offset: int) -> int:
        check_offset(before_offset, "before_offset")
        return self._call(self._truncate(before_offset))

    async def _truncate(self, before_offset: int) -> int:
        nc, jsm = self._connected()
        consumers = await jsm.consumers_info(self._cfg.stream)
        if not consumers:
            return 0
        # A purge makes nats-server (2.9 and earlier) forget every delivery of every consumer that
        # is not acknowledged yet, above the purged range too: a worker holding a batch that dies
        # before its ack would never see that batch again. Purge only when nothing is in flight.
        if any(c.num_ack_pending for c in consumers):
            return 0
        floor = min(c.ack_floor.stream_seq if c.ack_floor else 0 for c in consumers)
        limit = min(before_offset, floor + 1)
        if limit <= 1:
            return 0
        # nats-py's purge_stream drops the count; the API answers {"success": true, "purged": n}.
        answer = await nc.request(
            f"$JS.API.STREAM.PURGE.{self._cfg.stream}",
            orjson.dumps({"seq": limit}),
            timeout=self._cfg.timeout,
        )
        body = orjson.loads(answer.data)
        if "error" in body:
            raise BackendError(f"NATS refused to purge stream {self._cfg.stream!r}: {body['error']}")
        return int(body.get("purged", 0))

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for appends in progress, wake waiting readers (BackendError), drain the spool for up
        to ``drain_timeout`` seconds, hand back unacknowledged messages (NAK) and disconnect."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._lock.wait()
        self._runner.cancel_calls()  # wakes waiting readers with BackendError
        try:
            self._submit(self._shutdown()).result(timeout=self._cfg.drain_timeout + 2 * self._cfg.timeout)
        except Exception as exc:
            _logger.warning("NATS event log: unclean close (%s)", exc)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        self._supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervisor
        spool = self._spool
        if spool is not None and len(spool):
            deadline = self._loop.time() + self._cfg.drain_timeout
            with contextlib.suppress(BackendError):
                await self._prepare()  # one more try, if NATS was never reached yet
            if not (self._nc and self._nc.is_connected and await self._drain(deadline)):
                _logger.warning("NATS event log closed with %d events left in %s", len(spool), spool.path)
        for state in self._consumers.values():
            try:
                await state.stop()
            except Exception as exc:
                _logger.debug("NATS event log: NAK on close failed (%s)", exc)
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._nc is None:
            return
        try:
            await asyncio.wait_for(self._nc.close(), self._cfg.timeout)
        except Exception as exc:
            _logger.debug("NATS event log: close failed (%s)", exc)
