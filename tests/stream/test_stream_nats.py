"""NatsEventLog on the real NATS JetStream of this machine (and on private nats-servers we kill).

Every test uses a stream and subject prefix of its own and deletes the stream afterwards.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import nats
import pytest

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay.events import decode_event
from outlay.stream import EventLog, NatsEventLog, open_event_log

from ._nats_helpers import (
    PrivateNats,
    delete_stream,
    encoded,
    make_event,
    stream_messages,
    unique_stream,
    wait_until,
)
from .conformance import EventLogConformance, read_all

pytestmark = pytest.mark.services

WORKER = Path(__file__).with_name("_nats_worker.py")


class _NatsFactory:
    def __init__(self, url: str, stream: str, prefix: str) -> None:
        self.url, self.stream, self.prefix = url, stream, prefix

    def open(self) -> EventLog:
        return NatsEventLog(self.url, stream=self.stream, subject_prefix=self.prefix)

    def reopen(self, log: EventLog) -> EventLog:
        fresh = self.open()
        log.close()  # hands its unacknowledged messages back (NAK), as a restarted worker's would time out
        return fresh


@pytest.fixture
def names(nats_url: str) -> Iterator[tuple[str, str]]:
    stream, prefix = unique_stream()
    yield stream, prefix
    delete_stream(nats_url, stream)


class TestNatsEventLog(EventLogConformance):
    @pytest.fixture
    def factory(self, nats_url: str, names: tuple[str, str]) -> _NatsFactory:
        return _NatsFactory(nats_url, *names)


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A nats-server of this test's own (not started yet), killed at the end whatever happens."""
    server = PrivateNats(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
def log(nats_url: str, names: tuple[str, str]) -> Iterator[NatsEventLog]:
    log = NatsEventLog(nats_url, stream=names[0], subject_prefix=names[1])
    yield log
    log.close()


# -- subjects and deduplication ----------------------------------------------------------------


def test_events_are_published_by_environment_and_tenant(
    nats_url: str, log: NatsEventLog, names: tuple[str, str]
) -> None:
    prefix = names[1]
    events = [
        make_event(1, tenant="acme"),
        make_event(2, tenant="globex", environment="staging"),
        make_event(3, tenant=None),
        make_event(4, tenant="org.with spaces/ü"),
        make_event(5, tenant="_unattributed"),  # a tenant cannot pose as outlay's own token
    ]
    offsets = log.append([encoded(e) for e in events] + [b"not an event", b'{"type": "other"}'])
    assert offsets == [1, 2, 3, 4, 5, 6, 7]
    messages = stream_messages(nats_url, log.stream)
    assert [subject for _, subject, _ in messages] == [
        f"{prefix}.production.acme",
        f"{prefix}.staging.globex",
        f"{prefix}.production._unattributed",
        f"{prefix}.production.org%2Ewith%20spaces%2F%C3%BC",
        f"{prefix}.production.%5Funattributed",
        f"{prefix}._invalid",
        f"{prefix}._invalid",
    ]
    assert [headers["Nats-Msg-Id"] for _, _, headers in messages[:5]] == [e.event_id for e in events]
    assert messages[5][2]["Nats-Msg-Id"] != messages[6][2]["Nats-Msg-Id"]
    # what a consumer reads is the bytes the producer appended, invalid ones included
    records = log.read("ledger")
    assert [decode_event(r.payload) for r in records[:5]] == events
    assert [r.payload for r in records[5:]] == [b"not an event", b'{"type": "other"}']


def test_the_same_event_appended_twice_is_stored_once(log: NatsEventLog) -> None:
    first, second = make_event(1), make_event(2)
    assert log.append([encoded(first)]) == [1]
    # again later, and twice within one pipelined batch: the original offset every time
    assert log.append([encoded(first), encoded(second), encoded(second)]) == [1, 2, 2]
    assert log.end_offset() == 2
    assert [decode_event(r.payload).event_id for r in read_all(log, "ledger")] == [
        first.event_id,
        second.event_id,
    ]


def test_a_payload_over_the_server_limit_is_refused_naming_it(log: NatsEventLog) -> None:
    with pytest.raises(InvalidInput, match="max_payload") as info:
        log.append([b"small", b"x" * (2 * 1024 * 1024)])
    assert info.value.field == "payloads[1]"
    assert log.end_offset() == 0


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "http://127.0.0.1:4222"}, "url"),
        ({"url": ""}, "url"),
        ({"url": "nats://127.0.0.1:99999"}, "url"),
        ({"stream": "has.dot"}, "stream"),
        ({"stream": ""}, "stream"),
        ({"subject_prefix": "outlay.*"}, "subject_prefix"),
        ({"subject_prefix": "outlay..events"}, "subject_prefix"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"duplicate_window": float("inf")}, "duplicate_window"),
        ({"replicas": 0}, "replicas"),
        ({"max_ack_pending": True}, "max_ack_pending"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_argument(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        NatsEventLog(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_open_event_log_reads_nats_urls(nats_url: str, names: tuple[str, str], tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    url = f"{nats_url}?stream={names[0]}&subject_prefix={names[1]}&spool={spool}&ack_wait=5"
    with open_event_log(url) as log:
        assert isinstance(log, NatsEventLog)
        assert log.stream == names[0]
        assert log.append([encoded(make_event(1))]) == [1]
    assert spool.exists()
    with pytest.raises(ConfigError, match="unknown option 'sream'") as info:
        open_event_log(f"{nats_url}?sream=X")
    assert info.value.field == "url"


def test_a_stream_with_other_subjects_is_a_config_error(nats_url: str, names: tuple[str, str]) -> None:
    NatsEventLog(nats_url, stream=names[0], subject_prefix=names[1]).close()
    with pytest.raises(ConfigError, match=names[0]) as info:
        NatsEventLog(nats_url, stream=names[0], subject_prefix="some.other.prefix")
    assert info.value.field == "stream"


def test_without_a_spool_an_unreachable_nats_is_backend_unavailable(private_nats: PrivateNats) -> None:
    # never started: nothing listens on its port
    with pytest.raises(BackendUnavailable, match=str(private_nats.port)):
        NatsEventLog(private_nats.url, timeout=1)


# -- consumers in several processes --------------------------------------------------------------


def test_two_logs_sharing_a_consumer_never_ack_each_others_records(
    nats_url: str, names: tuple[str, str]
) -> None:
    first = NatsEventLog(nats_url, stream=names[0], subject_prefix=names[1])
    with NatsEventLog(nats_url, stream=names[0], subject_prefix=names[1]) as second:
        second.append([str(i).encode() for i in range(1, 11)])
        assert [r.offset for r in first.read("ledger", max_records=5)] == [1, 2, 3, 4, 5]
        assert [r.offset for r in second.read("ledger", max_records=5)] == [6, 7, 8, 9, 10]
        second.ack("ledger", 10)  # its own 6..10 only
        assert second.committed("ledger") == 0  # 1..5 are still out with the first log
        first.close()  # hands 1..5 back unacknowledged
        assert [r.offset for r in second.read("ledger")] == [1, 2, 3, 4, 5]
        second.ack("ledger", 5)
        assert second.committed("ledger") == 10


def test_records_arriving_between_a_read_and_its_ack_are_not_acknowledged(
    nats_url: str, names: tuple[str, str]
) -> None:
    # The second log's pull stops at max_ack_pending and stays pending on the server; the records
    # the first log hands back (NAK) then reach the second log after its read, before its ack.
    # Acking the offsets it read must not acknowledge those: it never returned (nor wrote) them.
    settings = {"stream": names[0], "subject_prefix": names[1], "max_ack_pending": 10, "timeout": 1.0}
    first = NatsEventLog(nats_url, **settings)  # type: ignore[arg-type]
    with NatsEventLog(nats_url, **settings) as second:  # type: ignore[arg-type]
        second.append([str(i).encode() for i in range(1, 31)])
        assert [r.offset for r in first.read("ledger", max_records=6)] == [1, 2, 3, 4, 5, 6]
        read = second.read("ledger", max_records=6)
        assert [r.offset for r in read] == [7, 8, 9, 10]  # max_ack_pending reached
        first.close()  # 1..6 handed back: some go to the second log's pending pull
        time.sleep(0.5)
        second.ack("ledger", read[-1].offset)
        seen = {r.offset for r in read}
        while records := second.read("ledger", max_records=100, timeout=0.5):
            seen |= {r.offset for r in records}
            second.ack("ledger", records[-1].offset)
        assert second.committed("ledger") == 30
        assert sorted(seen) == list(range(1, 31))  # every record was read before it was acked


def test_a_read_at_max_ack_pending_returns_what_it_got_without_waiting_for_the_timeout(
    nats_url: str, names: tuple[str, str]
) -> None:
    # The server neither answers nor drops a no-wait pull at max_ack_pending: the read used to wait
    # its whole `timeout` (5 s by default) for each batch, however many records it already had.
    settings = {"stream": names[0], "subject_prefix": names[1], "max_ack_pending": 10, "timeout": 5.0}
    with NatsEventLog(nats_url, **settings) as log:  # type: ignore[arg-type]
        log.append([str(i).encode() for i in range(1, 31)])
        started = time.monotonic()
        assert [r.offset for r in log.read("ledger", max_records=20)] == list(range(1, 11))
        assert time.monotonic() - started < 2.5


def _worker(url: str, names: tuple[str, str], out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(WORKER), url, names[0], names[1], "ledger", str(out), *extra]
    return subprocess.Popen(args)


def _offsets(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [int(o) for line in out.read_text().splitlines() for o in line.split()]


@pytest.mark.slow
def test_two_worker_processes_share_one_consumer_and_see_each_record_once(
    nats_url: str, log: NatsEventLog, names: tuple[str, str], tmp_path: Path
) -> None:
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers = [_worker(nats_url, names, out) for out in outs]
    try:
        wait_until(lambda: all(Path(f"{o}.ready").exists() for o in outs), "workers to start")
        total = 0
        for batch in range(20):
            total += len(log.append([encoded(make_event(batch * 100 + i)) for i in range(100)]))
        wait_until(lambda: log.committed("ledger") == total, "the workers to ack everything", timeout=60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0
    a, b = (_offsets(out) for out in outs)
    assert sorted(a + b) == list(range(1, total + 1))  # every record, none twice
    assert a and b  # both did part of the work


@pytest.mark.slow
def test_a_batch_held_by_a_killed_worker_is_redelivered_after_ack_wait(
    nats_url: str, names: tuple[str, str], tmp_path: Path
) -> None:
    with NatsEventLog(nats_url, stream=names[0], subject_prefix=names[1], ack_wait=1.0) as log:
        log.register("ledger")
        log.append([encoded(make_event(i)) for i in range(30)])
        out = tmp_path / "held.txt"
        holder = _worker(nats_url, names, out, "--hold", "--batch", "10", "--ack-wait", "1")
        try:
            wait_until(lambda: bool(_offsets(out)), "the worker to take a batch")
        finally:
            holder.kill()  # kill -9 while holding 10 unacknowledged records
            holder.wait()
        held = _offsets(out)
        assert held == list(range(1, 11))
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(set(seen)) < 30 and time.monotonic() < deadline:
            records = log.read("ledger", max_records=100, timeout=0.5)
            if records:
                seen.extend(r.offset for r in records)
                log.ack("ledger", records[-1].offset)
        assert sorted(set(seen)) == list(range(1, 31))  # the killed worker's batch came back
        assert log.committed("ledger") == 30


# -- the spool -----------------------------------------------------------------------------------


def test_events_appended_while_nats_is_down_are_spooled_then_sent_in_order(
    tmp_path: Path, private_nats: PrivateNats
) -> None:
    server = private_nats
    events = [make_event(i) for i in range(300)]
    with NatsEventLog(server.url, spool_path=tmp_path / "spool.db", timeout=1) as log:
        for start in range(0, 300, 100):  # three appends, all while nothing listens
            assert log.append([encoded(e) for e in events[start : start + 100]]) == [0] * 100
        assert log.spooled == 300
        with pytest.raises(BackendUnavailable):
            log.end_offset()
        server.start()
        try:
            wait_until(lambda: log.spooled == 0, "the spool to drain")
            assert log.end_offset() == 300
            records = read_all(log, "ledger")
            assert [decode_event(r.payload).event_id for r in records] == [e.event_id for e in events]
            assert log.append([encoded(make_event(1000))]) == [301]  # direct again
        finally:
            log.close()
            server.stop()


def test_the_spool_outlives_the_producer(tmp_path: Path, private_nats: PrivateNats) -> None:
    server = private_nats
    spool = tmp_path / "spool.db"
    events = [make_event(i) for i in range(50)]
    first = NatsEventLog(server.url, spool_path=spool, timeout=1, drain_timeout=0.1)
    first.append([encoded(e) for e in events])
    with pytest.raises(ConfigError, match="in use by another process"):
        NatsEventLog(server.url, spool_path=spool, timeout=1)
    first.close()  # NATS still down: the events stay in the file
    server.start()
    try:
        with NatsEventLog(server.url, spool_path=spool, timeout=1) as second:
            wait_until(lambda: second.spooled == 0, "the next producer to drain the spool")
            got = [decode_event(r.payload).event_id for r in read_all(second, "ledger")]
        assert got == [e.event_id for e in events]
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "stop"])
def test_nats_stopped_and_restarted_under_load_loses_nothing(
    tmp_path: Path, private_nats: PrivateNats, sig: signal.Signals
) -> None:
    server = private_nats
    server.start()
    appended: list[list[tuple[str, Decimal]]] = [[] for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []
    log = NatsEventLog(server.url, spool_path=tmp_path / "spool.db", timeout=1)

    def producer(n: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                batch = [make_event(n * 1_000_000 + i + k) for k in range(20)]
                log.append([encoded(e) for e in batch])
                appended[n].extend(
                    (e.event_id, e.cost or Decimal(0)) for e in batch
                )  # durable (stream or spool) now
                i += 20
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: sum(map(len, appended)) > 2000, "some load")
        server.stop(sig)
        wait_until(lambda: log.spooled > 500, "events to reach the spool")
        server.start()
        wait_until(lambda: log.spooled == 0 and sum(map(len, appended)) > 8000, "drain under load", 60)
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        wait_until(lambda: log.spooled == 0, "the spool to drain")
        records = read_all(log, "ledger")
    finally:
        stop.set()
        log.close()
        server.stop()
    expected = {event_id: cost for pairs in appended for event_id, cost in pairs}
    got = [decode_event(r.payload) for r in records]
    by_id = {e.event_id: e.cost or Decimal(0) for e in got}
    assert len(expected) > 8000
    assert by_id.keys() == expected.keys()  # nothing lost
    # totals are exact once deduplicated by event_id, as the ledger does
    assert sum(by_id.values(), Decimal(0)) == sum(expected.values(), Decimal(0))


def test_close_sends_what_is_spooled_when_nats_is_back(tmp_path: Path, private_nats: PrivateNats) -> None:
    log = NatsEventLog(private_nats.url, spool_path=tmp_path / "spool.db", timeout=1)
    events = [make_event(i) for i in range(20)]
    log.append([encoded(e) for e in events])
    private_nats.start()
    log.close()  # may run before the background drain: close drains itself
    with NatsEventLog(private_nats.url, spool_path=tmp_path / "spool.db", timeout=1) as again:
        assert again.spooled == 0
        assert [decode_event(r.payload).event_id for r in read_all(again, "c")] == [
            e.event_id for e in events
        ]


@pytest.mark.slow
def test_a_consumer_carries_on_after_nats_restarts(tmp_path: Path, private_nats: PrivateNats) -> None:
    private_nats.start()
    # ack_wait short: acks lost in the crash make the server redeliver those records after it
    with NatsEventLog(private_nats.url, timeout=1, ack_wait=2) as log:
        log.append([encoded(make_event(i)) for i in range(100)])
        first = log.read("ledger", max_records=40)
        log.ack("ledger", first[-1].offset)
        private_nats.stop(signal.SIGKILL)
        with pytest.raises(BackendUnavailable):
            log.read("ledger")
        private_nats.start()
        seen: list[int] = []

        def caught_up() -> bool:
            try:
                records = log.read("ledger", max_records=100, timeout=0.2)
            except BackendUnavailable:
                return False  # still reconnecting
            if records:
                seen.extend(r.offset for r in records)
                log.ack("ledger", records[-1].offset)
            return log.committed("ledger") == 100

        wait_until(caught_up, "the consumer to catch up after the restart")
        # Everything not acknowledged before the crash came; so may acknowledged records, since
        # nats-server writes consumer state lazily (at-least-once; the ledger is idempotent).
        assert set(range(41, 101)) <= set(seen) <= set(range(1, 101))


def test_truncate_never_makes_the_server_forget_a_batch_in_flight(nats_url: str) -> None:
    # nats-server 2.9 drops the pending deliveries of every consumer on a purge, also those above
    # the purged range: before, the batch a worker held (read, not acked) when another process
    # truncated was never delivered again once that worker died or closed.
    stream, prefix = f"REVLOG_{uuid.uuid4().hex[:10]}", f"revlog.test.{uuid.uuid4().hex[:10]}"
    try:
        worker = NatsEventLog(nats_url, stream=stream, subject_prefix=prefix)
        worker.append([str(i).encode() for i in range(1, 21)])
        assert len(worker.read("ledger", 100)) == 20
        worker.ack("ledger", 10)  # 11..20 are in hand, not written yet
        with NatsEventLog(nats_url, stream=stream, subject_prefix=prefix) as admin:
            assert admin.truncate(100) == 0  # would have purged 1..10 and lost 11..20
        worker.close()  # dies before acking: its batch must come back
        with NatsEventLog(nats_url, stream=stream, subject_prefix=prefix) as restarted:
            assert [r.offset for r in restarted.read("ledger", 100, timeout=5)] == list(range(11, 21))
            restarted.ack("ledger", 20)
            assert restarted.truncate(100) == 20  # nothing in flight: everything acknowledged goes
    finally:
        delete_stream(nats_url, stream)


@pytest.mark.parametrize("consumer", ["exporter.s3", "billing:v2", "ünïcode", "a%b", "_private", "x" * 200])
def test_any_consumer_name_reads_and_acknowledges(nats_url: str, consumer: str) -> None:
    # Before: a name escaped with '%' (a.b -> a%2Eb) made nats-server format its ack subjects
    # wrongly: no record was ever received, the worker failed with "unreachable: TimeoutError".
    stream, prefix = f"REVLOG_{uuid.uuid4().hex[:10]}", f"revlog.test.{uuid.uuid4().hex[:10]}"
    try:
        with NatsEventLog(nats_url, stream=stream, subject_prefix=prefix, timeout=2) as log:
            log.append([b"1", b"2", b"3"])
            assert [r.offset for r in log.read(consumer, 10, timeout=2)] == [1, 2, 3]
            log.ack(consumer, 2)
            assert log.committed(consumer) == 2
            assert log.committed("ledger") == 0  # another consumer entirely
        with NatsEventLog(nats_url, stream=stream, subject_prefix=prefix, timeout=2) as log:
            assert [r.offset for r in log.read(consumer, 10, timeout=2)] == [3]
    finally:
        delete_stream(nats_url, stream)


def test_durable_names_are_valid_and_one_to_one() -> None:
    from outlay.stream._nats_route import durable_name

    names = ["ledger", "a.b", "a%2Eb", "_xa2e62", "_x612e62", "-", "é", "x" * 200, "y" * 200, "日本" * 30]
    durables = [durable_name(n) for n in names]
    assert len(set(durables)) == len(names)
    for durable in durables:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", durable), durable
    assert durable_name("ledger") == "ledger"


def _delete_consumer(url: str, stream: str, durable: str) -> None:
    async def delete() -> None:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jsm().delete_consumer(stream, durable)
        finally:
            await nc.close()

    asyncio.run(delete())


def test_a_consumer_deleted_on_the_server_is_said_so_then_created_again(nats_url: str) -> None:
    # Before: once an operator (or a server that lost its storage) deleted the consumer, every read
    # of this process returned [] without a word, and an ack of a batch in hand failed as
    # "unreachable: NoRespondersError" forever, the same batch read again each time.
    stream, prefix = f"REVLOG_{uuid.uuid4().hex[:10]}", f"revlog.test.{uuid.uuid4().hex[:10]}"
    try:
        with NatsEventLog(nats_url, stream=stream, subject_prefix=prefix, timeout=2) as log:
            log.append([b"1", b"2"])
            assert len(log.read("ledger", 10)) == 2
            _delete_consumer(nats_url, stream, "ledger")  # a batch in hand
            with pytest.raises(BackendError, match="deleted on the server"):
                log.ack("ledger", 2)
            assert [r.offset for r in log.read("ledger", 10, timeout=2)] == [1, 2]
            log.ack("ledger", 2)
            _delete_consumer(nats_url, stream, "ledger")  # between two batches
            log.append([b"3"])
            with pytest.raises(BackendError, match="deleted on the server"):
                log.read("ledger", 10)
            assert [r.offset for r in log.read("ledger", 10, timeout=2)] == [1, 2, 3]
            log.ack("ledger", 3)
            assert log.committed("ledger") == 3
    finally:
        delete_stream(nats_url, stream)
