"""An in-memory event log: the same semantics as the durable ones, for tests (ours and users')."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from outlay._errors import BackendError, InvalidInput

from ._base import EventLog, LogRecord, check_consumer, check_offset, check_payloads, check_read_args

__all__ = ["InMemoryEventLog"]


class InMemoryEventLog(EventLog):
    """A thread-safe event log kept in this process's memory; "durable" only for its lifetime.

    >>> log = InMemoryEventLog()
    >>> log.append([b'{"id": 1}'])
    [1]
    >>> [r.offset for r in log.read("ledger")]
    [1]
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._records: list[LogRecord] = []
        self._first = 1  # offset of self._records[0]; grows as truncate drops the head
        self._end = 0
        self._committed: dict[str, int] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the event log is closed")

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        items = check_payloads(payloads)
        with self._cond:
            self._check_open()
            if not items:
                return []
            offsets = list(range(self._end + 1, self._end + 1 + len(items)))
            self._records.extend(LogRecord(o, p) for o, p in zip(offsets, items, strict=True))
            self._end = offsets[-1]
            self._cond.notify_all()
            return offsets

    def try_append(self, payloads: Sequence[bytes]) -> list[int] | None:
        return self.append(payloads)  # its lock is held for microseconds, never across I/O

    def read(self, consumer: str, max_records: int = 1000, timeout: float = 0.0) -> list[LogRecord]:
        check_consumer(consumer)
        check_read_args(max_records, timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_open()
                start = self._committed.setdefault(consumer, 0)
                if start < self._end:
                    index = max(0, start + 1 - self._first)
                    return self._records[index : index + max_records]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def ack(self, consumer: str, offset: int) -> None:
        check_consumer(consumer)
        check_offset(offset, "offset")
        with self._cond:
            self._check_open()
            if offset > self._end:
                raise InvalidInput(f"{offset} is beyond the end of the log ({self._end})", field="offset")
            if offset > self._committed.get(consumer, 0):
                self._committed[consumer] = offset

    def committed(self, consumer: str) -> int:
        check_consumer(consumer)
        with self._cond:
            self._check_open()
            return self._committed.get(consumer, 0)

    def end_offset(self) -> int:
        with self._cond:
            self._check_open()
            return self._end

    def register(self, consumer: str) -> None:
        check_consumer(consumer)
        with self._cond:
            self._check_open()
            self._committed.setdefault(consumer, 0)

    def truncate(self, before_offset: int) -> int:
        check_offset(before_offset, "before_offset")
        with self._cond:
            self._check_open()
            if not self._committed:
                return 0
            # Everything at or below the slowest consumer's ack is consumed by all of them.
            limit = min(before_offset, min(self._committed.values()) + 1)
            dropped = max(0, limit - self._first)
            if dropped:
                del self._records[:dropped]
                self._first += dropped
            return dropped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # readers waiting for records wake up and see the log closed

    def __repr__(self) -> str:
        return f"InMemoryEventLog(end_offset={self._end}, consumers={len(self._committed)})"
