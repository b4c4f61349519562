"""The event log seam: a durable, ordered, at-least-once log of encoded cost events.

Producers ``append`` encoded events (CloudEvents JSON bytes, see ``outlay.events``); ``append``
returns only once the events are durable. Each named consumer reads from its own acknowledged
offset and ``ack``s an offset only after it has committed what it read: a consumer that crashes
reads the unacknowledged records again (at-least-once; the ledger is idempotent on event_id).

Offsets start at 1, increase by one per record and are never reused, and a reader only ever sees
a gap-free prefix of the log: a consumer that reads past offset ``n`` has seen every record up to
``n`` that is still retained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from outlay._errors import InvalidInput

__all__ = [
    "EventLog",
    "LogRecord",
    "check_consumer",
    "check_offset",
    "check_payload_sizes",
    "check_payloads",
    "check_read_args",
]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of the log: its offset (increasing, starting at 1) and the encoded event."""

    offset: int
    payload: bytes


class EventLog(ABC):
    """Interface of every event log implementation (in-memory, SQLite, NATS JetStream)."""

    @abstractmethod
    def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Append encoded events; durable when this returns (or raise ``BackendError``).

        Returns the offsets given to ``payloads``, in order. An empty sequence is a no-op.
        A log with a producer spool (NATS while its server is unreachable) returns offset 0 for a
        payload it committed to the local spool instead: durable, but not yet in the stream.
        """

    def try_append(self, payloads: Sequence[bytes]) -> list[int] | None:
        """:meth:`append` if it can be done without waiting for another writer (a thread or process
        of this log); ``None``, having appended nothing, when it would have to wait — or when this
        log cannot tell, as here. For callers that must never block on a lock (an event loop)."""
        return None

    @abstractmethod
    def read(self, consumer: str, max_records: int = 1000, timeout: float = 0.0) -> list[LogRecord]:
        """Up to ``max_records`` records after ``consumer``'s acknowledged offset, in order.

        Waits up to ``timeout`` seconds for at least one record when none is available.
        A consumer that has never acknowledged starts at the beginning of the log; reading
        registers it (see :meth:`register`). Reading again without an ``ack`` returns the same
        records: delivery is at-least-once, the consumer's position is only what it acknowledged.
        """

    @abstractmethod
    def ack(self, consumer: str, offset: int) -> None:
        """Mark every record up to and including ``offset`` as processed by ``consumer``.

        Acknowledging an offset at or below :meth:`committed` is a no-op (acks never go back);
        an offset beyond :meth:`end_offset` raises ``InvalidInput``.
        """

    @abstractmethod
    def committed(self, consumer: str) -> int:
        """The last offset ``consumer`` acknowledged (0 if none)."""

    @abstractmethod
    def end_offset(self) -> int:
        """The offset of the last appended record (0 if the log is empty)."""

    @abstractmethod
    def register(self, consumer: str) -> None:
        """Declare ``consumer`` so that :meth:`truncate` keeps everything it has not acknowledged.

        Idempotent; a consumer that has already read or acknowledged is registered.
        """

    @abstractmethod
    def truncate(self, before_offset: int) -> int:
        """Drop records below ``before_offset`` that every registered consumer has acknowledged.

        Never drops a record some registered consumer has not acknowledged, and drops nothing
        when no consumer is registered. Returns the number of records dropped.
        """

    @abstractmethod
    def close(self) -> None:
        """Release resources; pending appends are flushed first. Idempotent."""

    def max_payload(self) -> int | None:
        """The largest payload, in bytes, :meth:`append` accepts (``None``: no limit). A buffer in
        front of the log checks it when an event is recorded, not once it cannot be appended."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# Shared argument checks, so every implementation rejects bad input with the same message.


def check_payload_sizes(payloads: Sequence[bytes], limit: int | None, where: str) -> None:
    """Raise ``InvalidInput`` naming the first payload over ``limit`` bytes (``None``: no limit)."""
    if limit is None:
        return
    for index, payload in enumerate(payloads):
        if len(payload) > limit:
            raise InvalidInput(f"{len(payload)} bytes is over {where} ({limit})", field=f"payloads[{index}]")


def check_payloads(payloads: Sequence[bytes]) -> list[bytes]:
    """``payloads`` as a list of ``bytes``; anything else raises ``InvalidInput`` naming the item."""
    if isinstance(payloads, bytes | bytearray | memoryview | str):
        # A lone bytes object is a Sequence of ints: appending it record-per-byte would be a bug.
        raise InvalidInput("expected a sequence of bytes payloads, not a single value", field="payloads")
    out: list[bytes] = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, bytes):
            out.append(payload)
        elif isinstance(payload, bytearray | memoryview):
            out.append(bytes(payload))
        else:
            raise InvalidInput(f"expected bytes, got {type(payload).__name__}", field=f"payloads[{index}]")
    return out


def check_consumer(consumer: str) -> str:
    """``consumer`` if it is a non-empty name, else ``InvalidInput``."""
    if not isinstance(consumer, str) or not consumer.strip():
        raise InvalidInput(f"expected a non-empty name, got {consumer!r}", field="consumer")
    return consumer


def check_offset(offset: int, field: str) -> int:
    """``offset`` if it is an integer >= 0, else ``InvalidInput`` naming ``field``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"expected an integer >= 0, got {offset!r}", field=field)
    return offset


def check_read_args(max_records: int, timeout: float) -> None:
    """Reject a ``max_records`` below 1 and a negative or non-finite ``timeout``."""
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise InvalidInput(f"expected an integer >= 1, got {max_records!r}", field="max_records")
    # NaN and infinity are refused: a wait must end (and threading cannot wait for inf).
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < 1e9:
        raise InvalidInput(f"expected a finite number of seconds >= 0, got {timeout!r}", field="timeout")
