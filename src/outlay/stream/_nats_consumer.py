"""One durable JetStream pull consumer as one process sees it (runs on the log's event loop).

JetStream delivers a message to one puller and then waits ``ack_wait`` for its ack before
delivering it again. The ``EventLog`` contract is stricter for a single reader: reading again
without an ack returns the same records. So this class keeps every message delivered to this
process and not yet acknowledged (``_held``) and serves it again on the next read; only the
records beyond it are fetched from the server. Several processes pulling from the same durable
consumer each hold their own share: that is how they split the load.

Pull requests are sent by hand (``$JS.API.CONSUMER.MSG.NEXT``) rather than through nats-py's
``fetch`` so that a request always ends with the server's answer (a status message or the full
batch), never with a client-side timer that leaves a lingering request behind to swallow later
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.manager import JetStreamManager

from outlay._errors import BackendError, InvalidInput

from ._base import LogRecord
from ._nats_publish import raw_command_writer

__all__ = ["PullConsumer"]

# Extra time, past a lingering request's own expiry, to wait for the server's 408 answer.
_GRACE: Final = 5.0
_FETCH_AHEAD: Final = 1000
# A no-wait pull that finds the consumer at max_ack_pending is neither answered nor dropped: the
# server keeps it waiting until acks make room. With an expiry it answers 408 after this long.
_NO_WAIT_EXPIRES: Final = 0.2
_V1_TOKENS: Final = 9


def _stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject, without nats-py's ``msg.metadata`` (which
    also builds a datetime and two objects per message: a third of the consumer's time).

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`` (9 tokens) or, from servers with
    domains, ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream seq>...``.
    """
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == _V1_TOKENS else tokens[7])


class PullConsumer:
    """The messages this process holds for one durable consumer, and the requests that fetch them."""

    def __init__(self, nc: Client, jsm: JetStreamManager, stream: str, durable: str, timeout: float) -> None:
        self._nc = nc
        self._jsm = jsm
        self._stream = stream
        self.durable = durable
        self._timeout = timeout
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()  # one request at a time, so answers match requests
        self._held: dict[int, Msg] = {}  # stream sequence -> message delivered here, not acked
        # The held sequences a read has returned: only those may an ack(offset) acknowledge. A pull
        # left pending on the server (max_ack_pending reached, a timeout) can still bring records,
        # e.g. another worker's redelivered batch, between a read and its ack: they have lower
        # offsets than the batch read, and were never written, so that ack must not take them.
        self._served: set[int] = set()
        self._highest = 0  # highest stream sequence ever delivered here
        self._reply: str | None = None  # reply subject of the request in flight
        self._received = 0
        self._expected = 0
        self._answered = asyncio.Event()
        self._requests = 0
        self._error: BackendError | None = None
        self.gone = False  # deleted on the server: the log drops this object and starts afresh

    @property
    def highest(self) -> int:
        """The highest stream sequence ever delivered to this process (0 if none)."""
        return self._highest

    async def start(self, config: api.ConsumerConfig) -> None:
        """Create the durable consumer unless it exists (its settings then win), and subscribe."""
        try:
            await self._jsm.consumer_info(self._stream, self.durable)
        except NotFoundError:
            await self._jsm.add_consumer(self._stream, config)
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        if msg.subject.startswith(self._inbox):
            # A status answer (404 no messages, 408 expired, 409 ...) ends the request it answers.
            if msg.subject == self._reply:
                status = msg.headers.get("Status") if msg.headers else None
                description = msg.headers.get("Description", "") if msg.headers else ""
                if status == "409" and "Deleted" in description:
                    self._error = self._gone()
                self._answered.set()
            return
        sequence = _stream_sequence(msg.reply)
        self._held[sequence] = msg  # a redelivery replaces the older copy (its ack subject is newer)
        self._highest = max(self._highest, sequence)
        if self._reply is not None:
            self._received += 1
            if self._received >= self._expected:
                self._answered.set()

    async def _pull(self, batch: int, expires: float | None) -> int:
        """Send one pull request and wait for its answer; the number of messages it brought."""
        self._requests += 1
        self._reply = f"{self._inbox}.{self._requests}"
        self._received, self._expected = 0, batch
        self._answered.clear()
        request: dict[str, object] = {"batch": batch}
        if expires is None:
            request["no_wait"] = True
            request["expires"] = int(_NO_WAIT_EXPIRES * 1e9)
        else:
            request["expires"] = max(int(expires * 1e9), 1_000_000)
        try:
            await self._nc.publish(self._next_subject, orjson.dumps(request), reply=self._reply)
            wait = self._timeout if expires is None else expires + _GRACE
            # A timeout means the connection went away mid-request; what arrived is held all the same.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), wait)
            if not self._answered.is_set() and not self._received and await self._deleted():
                # A pull for a consumer that no longer exists is never answered: without this, every
                # read returned nothing, without a word, for as long as the process lived.
                self._error = self._gone()
            return self._received
        finally:
            self._reply = None
            if self._error is not None:
                raise self._error

    def _gone(self) -> BackendError:
        self.gone = True
        return BackendError(
            f"consumer {self.durable!r} was deleted on the server; the next read creates it again,"
            " from the start of the stream"
        )

    async def _deleted(self) -> bool:
        """Whether the consumer is gone from the server (False when that cannot be told now)."""
        try:
            await self._jsm.consumer_info(self._stream, self.durable)
        except NotFoundError:
            return True
        except Exception:  # not connected, a timeout: the caller's own errors tell that story
            return False
        return False

    async def read(self, max_records: int, timeout: float) -> list[LogRecord]:
        """The held records plus new ones, oldest first, waiting up to ``timeout`` for one."""
        async with self._lock:
            missing = max_records - len(self._held)
            if missing > 0:
                await self._pull(missing, None)
                if not self._held and timeout > 0:
                    await self._pull(1, timeout)
                    missing = max_records - len(self._held)
                    if self._held and missing > 0:
                        await self._pull(missing, None)
            held = self._held
            served = sorted(held)[:max_records]
            self._served.update(served)
            return [LogRecord(seq, held[seq].data) for seq in served]

    async def ack(self, offset: int, end_offset: int, ack_floor: int) -> None:
        """Acknowledge every held message up to ``offset``, fetching first what was never read.

        ``end_offset`` and ``ack_floor`` are the stream's last sequence and the consumer's ack floor
        when ``offset`` is beyond what this process has seen (else 0 and unused).
        """
        async with self._lock:
            skipping = offset > self._highest
            if skipping:
                if offset > end_offset:
                    raise InvalidInput(
                        f"{offset} is beyond the end of the log ({end_offset})", field="offset"
                    )
                # Acking records nobody read (a consumer skipping ahead): fetch them to ack them.
                while self._highest < offset and ack_floor < offset:
                    want = min(offset - max(self._highest, ack_floor), _FETCH_AHEAD)
                    if await self._pull(want, None) == 0:
                        break  # the rest is held by another process sharing this consumer
            # Skipping ahead acknowledges everything up to offset (records nobody read, on purpose);
            # otherwise only what a read returned: a record that arrived since is read next time.
            done = sorted(seq for seq in self._held if seq <= offset and (skipping or seq in self._served))
            await self._answer(done, b"+ACK")
            for seq in done:
                del self._held[seq]
                self._served.discard(seq)

    async def _answer(self, sequences: list[int], verdict: bytes) -> None:
        """Send ``verdict`` (+ACK, -NAK) for held ``sequences``; the last one waits for the server.

        Acks of one connection are processed in order, so once the last is confirmed all are:
        committed() sees them, and other workers get NAKed records at once.
        """
        if not sequences:
            return
        write = raw_command_writer(self._nc)  # ~2 us a message instead of ~8 (see _nats_publish)
        for seq in sequences[:-1]:
            reply = self._held[seq].reply
            if write is not None:
                await write(b"PUB %s %d\r\n%s\r\n" % (reply.encode(), len(verdict), verdict))
            else:
                await self._nc.publish(reply, verdict)
        try:
            await self._nc.request(self._held[sequences[-1]].reply, verdict, timeout=self._timeout)
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            # Nobody answers the acks of a deleted consumer: its records were never acknowledged.
            if await self._deleted():
                raise self._gone() from exc
            raise

    async def forget(self) -> None:
        """Drop what this process holds of a consumer deleted on the server, and unsubscribe."""
        self._held.clear()
        self._served.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def stop(self) -> None:
        """Hand back what this process holds (NAK: redelivered now, not after ack_wait); unsubscribe."""
        try:
            await self._answer(sorted(self._held), b"-NAK")
        finally:
            self._held.clear()
            self._served.clear()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
