"""The event log seam: a durable, ordered, at-least-once log of encoded cost events.

Producers ``append`` encoded events (CloudEvents JSON bytes, see ``outlay.events``); ``append``
returns only once the events are durable. Each named consumer reads from its own acknowledged
offset and ``ack``s an offset only after it has committed what it read: a consumer that crashes
reads the unacknowledged records again (at-least-once; the ledger is idempotent on event_id).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EventLog", "LogRecord"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of the log: its offset (increasing, starting at 1) and the encoded event."""

    offset: int
    payload: bytes


class EventLog(ABC):
    """Interface of every event log implementation (in-memory, SQLite, NATS JetStream)."""

    @abstractmethod
    def append(self, payloads: Sequence[bytes]) -> None:
        """Append encoded events; durable when this returns (or raise ``BackendError``)."""

    @abstractmethod
    def read(self, consumer: str, max_records: int = 1000, timeout: float = 0.0) -> list[LogRecord]:
        """Up to ``max_records`` records after ``consumer``'s acknowledged offset, in order.

        Waits up to ``timeout`` seconds for at least one record when none is available.
        A consumer that has never acknowledged starts at the beginning of the log.
        """

    @abstractmethod
    def ack(self, consumer: str, offset: int) -> None:
        """Mark every record up to and including ``offset`` as processed by ``consumer``."""

    @abstractmethod
    def committed(self, consumer: str) -> int:
        """The last offset ``consumer`` acknowledged (0 if none)."""

    @abstractmethod
    def end_offset(self) -> int:
        """The offset of the last appended record (0 if the log is empty)."""

    @abstractmethod
    def close(self) -> None:
        """Release resources; pending appends are flushed first."""
