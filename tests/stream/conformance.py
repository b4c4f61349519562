"""The conformance suite every ``EventLog`` implementation must pass.

A backend's test module subclasses :class:`EventLogConformance` and provides a ``factory`` fixture
(see :class:`LogFactory`); pytest then runs every test here against that backend. Patterned on
OpenTelemetry's ``tests/context/base_context.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Protocol

import pytest

from outlay._errors import BackendError, InvalidInput
from outlay.stream import EventLog, LogRecord


class LogFactory(Protocol):
    def open(self) -> EventLog:
        """A new, empty log (the same storage on every call within a test)."""

    def reopen(self, log: EventLog) -> EventLog:
        """Drop ``log`` as a crashed process would and open its storage again."""


def payloads_of(records: list[LogRecord]) -> list[bytes]:
    return [r.payload for r in records]


def read_all(log: EventLog, consumer: str) -> list[LogRecord]:
    """Every record after ``consumer``'s ack, paging through with ack-free reads is impossible,
    so this acknowledges as it goes: use a throwaway consumer name."""
    out: list[LogRecord] = []
    while batch := log.read(consumer, max_records=500):
        out.extend(batch)
        log.ack(consumer, batch[-1].offset)
    return out


class EventLogConformance:
    @pytest.fixture
    def factory(self) -> LogFactory:
        raise NotImplementedError("a backend's test class provides the factory fixture")

    @pytest.fixture
    def log(self, factory: LogFactory) -> Iterator[EventLog]:
        log = factory.open()
        yield log
        log.close()

    # -- append and read -------------------------------------------------------------------------

    def test_offsets_start_at_one_and_increase_by_one(self, log: EventLog) -> None:
        assert log.end_offset() == 0
        assert log.append([b"a", b"b", b"c"]) == [1, 2, 3]
        assert log.append([b"d"]) == [4]
        assert log.end_offset() == 4

    def test_read_returns_the_appended_bytes_in_order(self, log: EventLog) -> None:
        payloads = [b'{"id": 1}', b"", b"\x00\xff binary \n", "é".encode() * 300]
        offsets = log.append(payloads)
        records = log.read("ledger")
        assert records == [LogRecord(o, p) for o, p in zip(offsets, payloads, strict=True)]

    def test_bytearray_and_memoryview_payloads_are_stored_as_bytes(self, log: EventLog) -> None:
        log.append([bytearray(b"ab"), memoryview(b"cd")])  # type: ignore[list-item]
        records = log.read("c")
        assert payloads_of(records) == [b"ab", b"cd"]
        assert all(type(r.payload) is bytes for r in records)

    def test_read_returns_at_most_max_records(self, log: EventLog) -> None:
        log.append([str(i).encode() for i in range(10)])
        assert [r.offset for r in log.read("c", max_records=3)] == [1, 2, 3]

    def test_a_huge_max_records_reads_everything(self, log: EventLog) -> None:
        # The SQLite log raised OverflowError (an SQLite LIMIT is a 64-bit integer).
        log.append([b"1", b"2"])
        assert payloads_of(log.read("c", max_records=2**64)) == [b"1", b"2"]

    def test_empty_append_is_a_no_op(self, log: EventLog) -> None:
        assert log.append([]) == []
        assert log.end_offset() == 0
        assert log.read("c") == []
        log.append([b"x"])
        assert log.append(()) == []
        assert log.end_offset() == 1

    def test_try_append_appends_as_append_would_or_appends_nothing(self, log: EventLog) -> None:
        log.append([b"a"])
        offsets = log.try_append([b"b", b"c"])  # nothing else writes: a log that can tell, does
        if offsets is None:  # a log that cannot tell (NATS) never appends half-way
            assert log.end_offset() == 1
            return
        assert offsets == [2, 3]
        assert payloads_of(log.read("c")) == [b"a", b"b", b"c"]
        assert log.try_append([]) == []

    # -- consumers -------------------------------------------------------------------------------

    def test_consumers_read_independently(self, log: EventLog) -> None:
        log.append([b"1", b"2", b"3"])
        log.ack("ledger", 2)
        assert payloads_of(log.read("ledger")) == [b"3"]
        assert payloads_of(log.read("exporter")) == [b"1", b"2", b"3"]
        assert log.committed("ledger") == 2
        assert log.committed("exporter") == 0

    def test_ack_moves_the_read_position(self, log: EventLog) -> None:
        log.append([b"1", b"2", b"3", b"4"])
        batch = log.read("c", max_records=2)
        log.ack("c", batch[-1].offset)
        assert log.committed("c") == 2
        assert [r.offset for r in log.read("c")] == [3, 4]

    def test_reading_again_without_ack_redelivers_the_same_records(self, log: EventLog) -> None:
        log.append([b"1", b"2"])
        first = log.read("c")
        assert log.read("c") == first

    def test_ack_below_committed_is_a_no_op(self, log: EventLog) -> None:
        log.append([b"1", b"2", b"3"])
        log.ack("c", 3)
        log.ack("c", 1)
        log.ack("c", 0)
        assert log.committed("c") == 3
        assert log.read("c") == []

    def test_ack_beyond_the_end_is_refused(self, log: EventLog) -> None:
        log.append([b"1", b"2"])
        log.ack("c", 1)
        with pytest.raises(InvalidInput, match="offset") as info:
            log.ack("c", 3)
        assert isinstance(info.value, ValueError)
        assert log.committed("c") == 1

    def test_unacked_records_are_read_again_after_reopening(self, factory: LogFactory) -> None:
        log = factory.open()
        log.append([b"1", b"2", b"3", b"4", b"5"])
        batch = log.read("ledger", max_records=3)
        log.ack("ledger", batch[1].offset)  # processed 1 and 2; crashed while on 3
        log = factory.reopen(log)
        try:
            assert log.committed("ledger") == 2
            assert payloads_of(log.read("ledger")) == [b"3", b"4", b"5"]
            assert log.end_offset() == 5
            assert log.append([b"6"]) == [6]  # offsets are not reused after a restart
        finally:
            log.close()

    # -- waiting ---------------------------------------------------------------------------------

    def test_read_with_timeout_waits_then_returns_nothing(self, log: EventLog) -> None:
        started = time.monotonic()
        assert log.read("c", timeout=0.2) == []
        assert time.monotonic() - started >= 0.15  # it did wait, it did not return at once

    def test_waiting_read_returns_a_record_appended_meanwhile(self, log: EventLog) -> None:
        got: list[list[LogRecord]] = []
        reader = threading.Thread(target=lambda: got.append(log.read("c", timeout=30)))
        reader.start()
        time.sleep(0.05)
        log.append([b"late"])
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert payloads_of(got[0]) == [b"late"]

    def test_close_wakes_a_waiting_reader_with_an_error(self, factory: LogFactory) -> None:
        log = factory.open()
        errors: list[BaseException] = []

        def wait_for_records() -> None:
            try:
                log.read("c", timeout=30)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=wait_for_records)
        reader.start()
        time.sleep(0.05)
        log.close()
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], BackendError)

    # -- concurrency -----------------------------------------------------------------------------

    def test_sixteen_threads_appending_at_once(self, log: EventLog) -> None:
        got: dict[bytes, int] = {}
        lock = threading.Lock()
        start = threading.Barrier(16)

        def producer(thread: int) -> None:
            start.wait()
            for batch in range(20):
                payloads = [f"{thread}-{batch}-{i}".encode() for i in range(1 + (thread + batch) % 3)]
                offsets = log.append(payloads)
                with lock:
                    got.update(zip(payloads, offsets, strict=True))

        threads = [threading.Thread(target=producer, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = read_all(log, "checker")
        assert len(records) == len(got)
        assert sorted(got.values()) == list(range(1, len(got) + 1))  # unique, no gaps
        assert {r.payload: r.offset for r in records} == got  # each payload once, where append said

    # -- retention -------------------------------------------------------------------------------

    def test_truncate_never_drops_what_a_consumer_has_not_acknowledged(self, log: EventLog) -> None:
        log.append([str(i).encode() for i in range(1, 11)])
        log.register("slow")
        log.ack("fast", 8)
        log.ack("slow", 5)
        assert log.truncate(100) == 5
        assert [r.offset for r in log.read("slow")] == [6, 7, 8, 9, 10]
        assert [r.offset for r in log.read("fast")] == [9, 10]
        assert log.end_offset() == 10
        assert log.truncate(100) == 0  # idempotent

    def test_truncate_stops_at_before_offset(self, log: EventLog) -> None:
        log.append([b"1", b"2", b"3"])
        log.ack("c", 3)
        assert log.truncate(2) == 1
        assert [r.offset for r in log.read("new")] == [2, 3]

    def test_truncate_keeps_everything_for_a_registered_consumer_that_never_read(self, log: EventLog) -> None:
        log.register("late")
        log.append([b"1", b"2"])
        log.ack("early", 2)
        assert log.truncate(100) == 0
        assert payloads_of(log.read("late")) == [b"1", b"2"]

    def test_truncate_without_consumers_drops_nothing(self, log: EventLog) -> None:
        log.append([b"1"])
        assert log.truncate(100) == 0
        assert payloads_of(log.read("c")) == [b"1"]

    def test_offsets_are_not_reused_after_truncating_everything(self, factory: LogFactory) -> None:
        log = factory.open()
        log.append([b"1", b"2"])
        log.ack("c", 2)
        assert log.truncate(100) == 2
        log = factory.reopen(log)
        try:
            assert log.end_offset() == 2
            assert log.append([b"3"]) == [3]
            assert [r.offset for r in log.read("c")] == [3]
        finally:
            log.close()

    # -- bad input and lifecycle -----------------------------------------------------------------

    @pytest.mark.parametrize(
        ("payloads", "field"),
        [
            (b"not a list", "payloads"),
            ("text", "payloads"),
            ([b"ok", "text"], "payloads[1]"),
            ([None], "payloads[0]"),
        ],
    )
    def test_append_refuses_what_is_not_a_sequence_of_bytes(
        self, log: EventLog, payloads: object, field: str
    ) -> None:
        with pytest.raises(InvalidInput) as info:
            log.append(payloads)  # type: ignore[arg-type]
        assert info.value.field == field
        assert log.end_offset() == 0  # nothing of a refused call is written

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda log: log.read(""), "consumer"),
            (lambda log: log.read("c", max_records=0), "max_records"),
            (lambda log: log.read("c", timeout=-1), "timeout"),
            (lambda log: log.read("c", timeout=float("nan")), "timeout"),
            (lambda log: log.ack("c", -1), "offset"),
            (lambda log: log.ack("c", True), "offset"),
            (lambda log: log.ack("  ", 0), "consumer"),
            (lambda log: log.committed(""), "consumer"),
            (lambda log: log.truncate(-5), "before_offset"),
        ],
    )
    def test_bad_arguments_name_the_field(self, log: EventLog, call: object, field: str) -> None:
        with pytest.raises(InvalidInput) as info:
            call(log)  # type: ignore[operator]
        assert info.value.field == field

    def test_close_is_idempotent_and_a_closed_log_refuses_work(self, factory: LogFactory) -> None:
        log = factory.open()
        log.append([b"1"])
        log.close()
        log.close()
        for call in (lambda: log.append([b"2"]), lambda: log.read("c"), log.end_offset):
            with pytest.raises(BackendError, match="closed"):
                call()

    def test_context_manager_closes_the_log(self, factory: LogFactory) -> None:
        with factory.open() as log:
            log.append([b"1"])
        with pytest.raises(BackendError):
            log.end_offset()
