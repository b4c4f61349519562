"""BatchingAppender: buffers, batches, backpressure, retries, flush/close and its errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay.stream import BatchingAppender, InMemoryEventLog, LogRecord

from .conformance import read_all


class ControlledLog(InMemoryEventLog):
    """A memory log whose appends can be held at a gate or made to fail, to drive the appender."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.failures_left = 0
        self.calls: list[int] = []  # batch sizes the appender committed

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise BackendError("the log is down")
        self.calls.append(len(payloads))
        return super().append(payloads)


@pytest.fixture
def log() -> ControlledLog:
    return ControlledLog()


@pytest.fixture
def make(log: ControlledLog) -> Iterator[Callable[..., BatchingAppender]]:
    made: list[BatchingAppender] = []

    def make(**options: float) -> BatchingAppender:
        appender = BatchingAppender(log, **options)  # type: ignore[arg-type]
        made.append(appender)
        return appender

    yield make
    log.gate.set()
    log.failures_left = 0
    for appender in made:
        appender.close(timeout=30)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_append_returns_before_the_events_are_durable_and_flush_makes_them_so(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    appender = make(max_events=1000, max_delay=60)
    appender.append([b"1", b"2"])
    appender.append([b"3"])
    assert log.end_offset() == 0
    assert appender.pending == 3
    appender.flush()
    assert appender.pending == 0
    assert [r.payload for r in log.read("c")] == [b"1", b"2", b"3"]


def test_a_full_batch_is_written_without_a_flush(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    appender = make(max_events=5, max_delay=60)
    appender.append([str(i).encode() for i in range(12)])
    _wait_until(lambda: log.end_offset() == 10, "two full batches")
    assert log.calls == [5, 5]
    assert appender.pending == 2  # the rest waits for max_delay or a flush


def test_max_delay_writes_a_partial_batch(log: ControlledLog, make: Callable[..., BatchingAppender]) -> None:
    make(max_events=1000, max_delay=0.02).append([b"lonely"])
    _wait_until(lambda: log.end_offset() == 1, "max_delay to pass")


def test_events_from_many_threads_are_all_written_once_in_each_threads_order(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    appender = make(max_events=64, max_delay=0.005, max_buffer=256)

    def producer(thread: int) -> None:
        for i in range(300):
            appender.append([f"{thread}:{i}".encode()])

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appender.flush()
    records = read_all(log, "checker")
    assert len(records) == 2400
    for thread in range(8):
        mine = [r.payload for r in records if r.payload.startswith(f"{thread}:".encode())]
        assert mine == [f"{thread}:{i}".encode() for i in range(300)]


def test_a_full_buffer_makes_append_wait_instead_of_dropping(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    appender = make(max_events=4, max_delay=0.001, max_buffer=8)
    log.gate.clear()  # the log stalls: nothing leaves the buffer
    appender.append([str(i).encode() for i in range(8)])
    blocked = threading.Thread(target=appender.append, args=([b"9th"],))
    blocked.start()
    blocked.join(timeout=0.2)
    assert blocked.is_alive(), "append returned although the buffer was full"
    assert appender.pending == 8
    log.gate.set()
    blocked.join(timeout=10)
    assert not blocked.is_alive()
    appender.flush()
    assert [r.payload for r in read_all(log, "c")][-1] == b"9th"
    assert log.end_offset() == 9


def test_a_failing_log_is_retried_until_it_accepts_the_batch(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    log.failures_left = 2
    appender = make(max_events=100, max_delay=0.001)
    appender.append([b"a", b"b"])
    appender.flush(timeout=10)
    assert [r.payload for r in read_all(log, "c")] == [b"a", b"b"]


def test_flush_and_close_time_out_with_the_logs_error_while_it_stays_down(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    log.failures_left = 10**9
    appender = make(max_events=100, max_delay=0.001)
    appender.append([b"kept"])
    with pytest.raises(BackendError, match="1 events are not durable") as info:
        appender.flush(timeout=0.2)
    assert "the log is down" in str(info.value.__cause__)
    with pytest.raises(BackendError, match="close timed out"):
        appender.close(timeout=0.2)
    log.failures_left = 0  # the log comes back: the buffered event was never dropped
    appender.close(timeout=10)
    assert [r.payload for r in log.read("c")] == [b"kept"]


def test_close_drains_and_then_refuses_appends(
    log: ControlledLog, make: Callable[..., BatchingAppender]
) -> None:
    appender = make(max_events=1000, max_delay=60)
    appender.append([b"1"])
    appender.close()
    assert log.read("c") == [LogRecord(1, b"1")]
    appender.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        appender.append([b"2"])


def test_context_manager_drains(log: ControlledLog) -> None:
    with BatchingAppender(log, max_delay=60) as appender:
        appender.append([b"1"])
    assert log.end_offset() == 1


def test_bad_payloads_are_refused_at_append(make: Callable[..., BatchingAppender]) -> None:
    appender = make()
    with pytest.raises(InvalidInput) as info:
        appender.append([b"ok", 3])  # type: ignore[list-item]
    assert info.value.field == "payloads[1]"
    assert appender.pending == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_events": 0}, "max_events"),
        ({"max_events": 1.5}, "max_events"),
        ({"max_buffer": 0}, "max_buffer"),
        ({"max_events": 100, "max_buffer": 10}, "max_buffer"),
        ({"max_delay": 0}, "max_delay"),
        ({"max_delay": -1}, "max_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"exit_timeout": 0}, "exit_timeout"),
    ],
)
def test_bad_options_are_config_errors(log: ControlledLog, options: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        BatchingAppender(log, **options)  # type: ignore[arg-type]
    assert info.value.field == field


class SmallLog(InMemoryEventLog):
    """A log that takes payloads up to 100 bytes only, as NATS does up to its max_payload."""

    def max_payload(self) -> int | None:
        return 100

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        if any(len(p) > 100 for p in payloads):
            raise InvalidInput("over max_payload", field="payloads")
        return super().append(payloads)


def test_a_payload_the_log_can_never_take_is_refused_when_buffered() -> None:
    """An event over the NATS server's max_payload (labels of 1 MB) was buffered in batching mode,
    then its batch failed on every retry: every later event stayed undurable and flush() hung."""
    log = SmallLog()
    with BatchingAppender(log, max_delay=0.01) as appender:
        appender.append([b"a"])
        with pytest.raises(InvalidInput, match="max_payload") as info:
            appender.append([b"b", b"x" * 101])
        assert info.value.field == "payloads[1]"
        appender.append([b"c"])
        appender.flush(timeout=5)
    assert [r.payload for r in read_all(log, "c")] == [b"a", b"c"]
