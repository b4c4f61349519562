"""InMemoryEventLog against the conformance suite."""

from __future__ import annotations

import pytest

from outlay.stream import EventLog, InMemoryEventLog

from .conformance import EventLogConformance


class _MemoryFactory:
    """Memory dies with its process: "reopening" keeps the same log, so the suite checks the
    consumer-crash half (unacked records come back) and not the log-crash half."""

    def open(self) -> EventLog:
        return InMemoryEventLog()

    def reopen(self, log: EventLog) -> EventLog:
        return log


class TestInMemoryEventLog(EventLogConformance):
    @pytest.fixture
    def factory(self) -> _MemoryFactory:
        return _MemoryFactory()

    def test_logs_do_not_share_records(self) -> None:
        first, second = InMemoryEventLog(), InMemoryEventLog()
        first.append([b"1"])
        assert second.end_offset() == 0
