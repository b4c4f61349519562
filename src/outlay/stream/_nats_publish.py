"""Pipelined JetStream publishing: many messages in flight on one connection, then all their PubAcks.

nats-py's ``publish_async`` does the same with a semaphore, a random token and a done-callback per
message; this is the minimum instead (a counter in the reply subject and one future), which is
what the end-to-end throughput target needs. Runs on the log's event loop.

Per message, ``Client.publish`` costs ~10 us of CPU, mostly re-validating and re-encoding the
header dict; writing the ``HPUB`` command ourselves into nats-py's outgoing buffer costs ~3 us.
Subjects and message ids are valid by construction (see ``_nats_route``), so the batch is written
that way, and only its last message goes through ``Client.publish``, which also wakes nats-py's
flusher for the whole batch. If a future nats-py drops the private ``_send_command``, every message
takes the public path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from outlay._errors import BackendUnavailable

from ._nats_route import Outgoing

__all__ = ["Publisher", "raw_command_writer"]

_NO_RESPONDERS: Final = "503"


def raw_command_writer(nc: Client) -> Callable[[bytes], Awaitable[None]] | None:
    """nats-py's (private) coroutine that queues one protocol command, if this version has it."""
    send = getattr(nc, "_send_command", None)
    return send if callable(send) else None


def _hpub(subject: str, reply: str, msg_id: str, payload: bytes) -> bytes:
    header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
    size = len(header)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        size,
        size + len(payload),
        header,
        payload,
    )


class _Batch:
    """The PubAcks one ``publish`` call waits for: one counter and one future, not one per message."""

    __slots__ = ("acks", "done", "missing")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.acks: list[Msg | None] = [None] * size
        self.missing = size
        self.done = done


class Publisher:
    """Publishes with ``Nats-Msg-Id`` and gathers the stream sequences from the PubAcks."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._inbox = nc.new_inbox()
        self._waiting: dict[str, tuple[_Batch, int]] = {}  # reply subject -> (batch, index)
        self._count = 0
        self._write = raw_command_writer(nc)

    async def start(self) -> None:
        # One wildcard subscription for every PubAck; nats-py renews it after a reconnect.
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_puback)

    async def _on_puback(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject, None)
        if entry is None:
            return  # the answer to a batch that already timed out
        batch, index = entry
        batch.acks[index] = msg
        batch.missing -= 1
        if batch.missing == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def publish(self, items: Sequence[Outgoing]) -> list[int | BaseException]:
        """Each item's stream sequence (the first copy's, for a duplicate), or why it has none."""
        batch = _Batch(len(items), asyncio.get_running_loop().create_future())
        replies: list[str] = []
        failure: BaseException | None = None
        last = len(items) - 1
        try:
            for index, item in enumerate(items):
                self._count += 1
                reply = f"{self._inbox}.{self._count}"
                self._waiting[reply] = (batch, index)
                replies.append(reply)
                if self._write is not None and index < last:
                    await self._write(_hpub(item.subject, reply, item.msg_id, item.payload))
                else:
                    headers = {"Nats-Msg-Id": item.msg_id}
                    await self._nc.publish(item.subject, item.payload, reply=reply, headers=headers)
        except Exception as exc:  # the connection went away mid-batch: the rest was not sent
            failure = exc
            batch.missing -= len(items) - len(replies)
        if replies and batch.missing > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.done, self._timeout)
        for reply in replies:
            self._waiting.pop(reply, None)  # no PubAck in time: forget it (a late one is ignored)
        results = [self._result(ack) for ack in batch.acks[: len(replies)]]
        results.extend([failure or BackendUnavailable("not published")] * (len(items) - len(replies)))
        return results

    @staticmethod
    def _result(msg: Msg | None) -> int | BaseException:
        if msg is None:
            return TimeoutError("no PubAck from JetStream in time")
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            return NoStreamResponseError()  # no stream listens on the subject (yet, or any more)
        try:
            answer = orjson.loads(msg.data)
            if "error" in answer:
                error: BaseException = APIError.from_error(answer["error"])
                return error
            return int(answer["seq"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return exc
