"""The log -> ledger writer: exactly-once totals under redelivery, replay, bad payloads and crashes."""

from __future__ import annotations

import gc
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from outlay._errors import BackendError, InvalidInput
from outlay._money import money_sum
from outlay.events import CostEvent, decode_event, encode_event
from outlay.ledger import GROUP_KEYS, InMemoryLedger, LedgerStore, LedgerWriter, SQLiteLedger, WriteResult
from outlay.stream import EventLog, InMemoryEventLog, SQLiteEventLog

from .conformance import DAY0, DAY_END, by_key, grand_total, recompute
from .conftest import T0, D, LedgerFactory, awkward_events, event

CHILD = Path(__file__).with_name("_writer_child.py")


def _log_with(events: Sequence[CostEvent], log: EventLog | None = None) -> EventLog:
    log = log or InMemoryEventLog()
    log.append([encode_event(e) for e in events])
    return log


def _assert_exactly(ledger: LedgerStore, events: Sequence[CostEvent]) -> None:
    assert ledger.event_count() == len({e.event_id for e in events})
    total = grand_total(ledger)
    assert total is not None
    assert total.cost == money_sum(e.cost for e in events if e.cost is not None)
    assert by_key(ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END)) == recompute(
        events, list(GROUP_KEYS)
    )


def test_catch_up_writes_everything_and_acks(make_ledger: LedgerFactory) -> None:
    ledger, events = make_ledger(), awkward_events(1200)
    log = _log_with(events)
    stats = LedgerWriter(log, ledger, batch_size=500).catch_up()
    assert (stats.read, stats.inserted, stats.duplicates, stats.batches) == (1200, 1200, 0, 3)
    assert log.committed("ledger") == 1200
    _assert_exactly(ledger, events)
    assert LedgerWriter(log, ledger).catch_up().read == 0


def test_replay_from_offset_zero_changes_no_total(make_ledger: LedgerFactory) -> None:
    ledger, events = make_ledger(), awkward_events(300)
    log = _log_with(events + events[:100])  # the producer also retried a hundred events
    LedgerWriter(log, ledger).catch_up()
    before = ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END)
    replay = LedgerWriter(log, ledger, consumer="replay-from-zero").catch_up()
    assert (replay.inserted, replay.duplicates) == (0, 400)
    assert ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END) == before
    _assert_exactly(ledger, events)


def test_bad_payloads_are_rejected_and_never_reach_the_totals(make_ledger: LedgerFactory) -> None:
    ledger = make_ledger()
    good = awkward_events(5)
    euro = orjson.loads(encode_event(event()))
    euro["data"]["currency"] = "EUR"
    typo = orjson.loads(encode_event(event()))
    typo["data"]["tenant"] = "acme"
    floaty = orjson.loads(encode_event(event()))
    floaty["data"]["cost"] = 0.1
    bad = [b"not json", orjson.dumps(euro), orjson.dumps(typo), orjson.dumps(floaty), b"[]"]
    log = InMemoryEventLog()
    log.append([encode_event(good[0]), *bad[:3], *(encode_event(e) for e in good[1:]), *bad[3:]])
    stats = LedgerWriter(log, ledger).catch_up()
    assert (stats.inserted, stats.rejected) == (5, 5)
    assert log.committed("ledger") == 10  # rejects do not block the log
    _assert_exactly(ledger, good)
    reasons = {r.payload: r.reason for r in ledger.rejected()}
    assert set(reasons) == set(bad)
    assert "invalid JSON" in reasons[b"not json"]
    assert "currency" in reasons[orjson.dumps(euro)]
    assert "tenant" in reasons[orjson.dumps(typo)]
    assert "data.cost" in reasons[orjson.dumps(floaty)]
    LedgerWriter(log, ledger, consumer="again").catch_up()
    assert len(ledger.rejected()) == 5  # a replay rejects the same payloads once


def test_an_event_the_ledger_cannot_hold_is_rejected_alone_and_the_rest_written(tmp_path: Path) -> None:
    """An event that decodes but that the ledger refuses (here a count past 64 bits, as an outlay
    without today's bound on counts could have logged) must not hold back anyone's events."""
    good = [event(tenant_id=f"t{i % 3}", cost=D("0.25")) for i in range(9)]
    poison = event(tenant_id="t1", cost=D("1"))
    log = InMemoryEventLog()
    log.append(
        [encode_event(e) for e in good[:4]] + [encode_event(poison)] + [encode_event(e) for e in good[4:]]
    )

    def old_decoder(payload: bytes) -> CostEvent:
        decoded = decode_event(payload)
        if decoded.event_id == poison.event_id:
            object.__setattr__(decoded.usage, "input_tokens", 2**64)  # what the bound now refuses
        return decoded

    ledger = SQLiteLedger(tmp_path / "outlay.db")
    try:
        stats = LedgerWriter(log, ledger, decode=old_decoder).catch_up()
        assert (stats.inserted, stats.rejected, stats.batches) == (9, 1, 1)
        assert log.committed("ledger") == 10  # acknowledged: the log moves on
        _assert_exactly(ledger, good)
        [rejected] = ledger.rejected()
        assert rejected.payload == encode_event(poison)
        assert "offset 5" in rejected.reason and "OverflowError" in rejected.reason
    finally:
        ledger.close()


def test_a_backend_failure_is_never_mistaken_for_a_bad_event() -> None:
    log, ledger = _log_with(awkward_events(8)), _FailingLedger(failures=1)
    with pytest.raises(BackendError):
        LedgerWriter(log, ledger).run_once()
    assert ledger.rejected() == [] and log.committed("ledger") == 0


class _FailingLedger(InMemoryLedger):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        if self.failures:
            self.failures -= 1
            raise BackendError("disk full")
        return super().write(events, payloads)


def test_nothing_is_acked_when_the_write_fails() -> None:
    events = awkward_events(20)
    log, ledger = _log_with(events), _FailingLedger(failures=1)
    writer = LedgerWriter(log, ledger)
    with pytest.raises(BackendError):
        writer.run_once()
    assert log.committed("ledger") == 0
    assert writer.catch_up().inserted == 20
    _assert_exactly(ledger, events)


def test_run_forever_retries_failures_and_stops_on_request() -> None:
    events = awkward_events(600)
    log, ledger = InMemoryEventLog(), _FailingLedger(failures=2)
    stop = threading.Event()
    writer = LedgerWriter(log, ledger, batch_size=100)
    thread = threading.Thread(target=writer.run_forever, args=(stop,), kwargs={"poll": 0.05})
    thread.start()
    try:
        for start in range(0, 600, 60):
            log.append([encode_event(e) for e in events[start : start + 60]])
        deadline = time.monotonic() + 30
        while log.committed("ledger") < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    _assert_exactly(ledger, events)
    assert gc.isenabled()  # paused for each batch, failed ones included, and given back


def test_producers_and_a_writer_running_together(tmp_path: Path) -> None:
    events = awkward_events(2000)
    log = SQLiteEventLog(tmp_path / "log.db")
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    stop = threading.Event()
    writer = threading.Thread(target=LedgerWriter(log, ledger, batch_size=300).run_forever, args=(stop,))
    writer.start()

    def produce(part: Sequence[CostEvent]) -> None:
        for start in range(0, len(part), 25):
            log.append([encode_event(e) for e in part[start : start + 25]])

    producers = [threading.Thread(target=produce, args=(events[i::4],)) for i in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    deadline = time.monotonic() + 60
    while log.committed("ledger") < 2000 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    writer.join(timeout=30)
    _assert_exactly(ledger, events)
    ledger.close()
    log.close()


def test_bad_batch_size_is_refused() -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        LedgerWriter(InMemoryEventLog(), InMemoryLedger(), batch_size=0)


def test_the_writer_and_outlay_worker_take_20000_records_a_step_by_default() -> None:
    # Bigger batches rewrite fewer ledger pages per event (docs/benchmarks.md); the CLI keeps its
    # own copy of the default so its start stays light, and must say the same.
    from click.testing import CliRunner

    from outlay.cli import main
    from outlay.ledger import DEFAULT_BATCH

    assert DEFAULT_BATCH == 20_000
    log = _log_with([event(time=T0 + timedelta(seconds=i)) for i in range(DEFAULT_BATCH + 7)])
    writer = LedgerWriter(log, InMemoryLedger())
    assert writer.run_once().inserted == DEFAULT_BATCH
    assert writer.run_once().inserted == 7
    shown = CliRunner().invoke(main, ["worker", "--help"], terminal_width=200).output
    assert f"[default: {DEFAULT_BATCH};" in " ".join(shown.split())


# --- kill -9 of a real writer process ----------------------------------------------------------


def _child(tmp_path: Path, mode: str, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(tmp_path / "log.db"), str(tmp_path / "ledger.db"), mode, str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_when(child: subprocess.Popen[str], marker: str) -> list[str]:
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line.strip())
        if line.startswith(marker):
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL, f"the writer ended before it was killed: {lines}"
    return lines


def _fill_log(tmp_path: Path, events: Sequence[CostEvent]) -> None:
    with SQLiteEventLog(tmp_path / "log.db") as log:
        for start in range(0, len(events), 1000):
            log.append([encode_event(e) for e in events[start : start + 1000]])


def _restart_and_check(tmp_path: Path, events: Sequence[CostEvent]) -> WriteResult:
    with SQLiteEventLog(tmp_path / "log.db") as log, SQLiteLedger(tmp_path / "ledger.db") as ledger:
        stats = LedgerWriter(log, ledger).catch_up()
        _assert_exactly(ledger, events)
        assert log.committed("ledger") == len(events)
        return WriteResult(stats.inserted, stats.duplicates)


@pytest.mark.slow
def test_kill_9_inside_the_ledger_transaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    events = awkward_events(3000)
    _fill_log(tmp_path, events)
    lines = _kill_when(_child(tmp_path, "stall-in-transaction", 1000), "in-transaction")
    assert lines == ["batch 1000", "in-transaction"]
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        assert ledger.event_count() == 1000  # the killed batch rolled back: no half batch, no rollup
        _assert_exactly(ledger, events[:1000])
    assert _restart_and_check(tmp_path, events) == WriteResult(2000, 0)


@pytest.mark.slow
def test_kill_9_between_commit_and_ack_is_replayed_without_doubling(tmp_path: Path) -> None:
    events = awkward_events(2500)
    _fill_log(tmp_path, events)
    lines = _kill_when(_child(tmp_path, "stall-before-ack", 1000), "committed")
    assert lines == ["committed 1000"]
    # The batch was committed but not acknowledged: the restarted writer reads it again.
    assert _restart_and_check(tmp_path, events) == WriteResult(1500, 1000)


@pytest.mark.slow
def test_repeated_kill_9_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random()
    events = awkward_events(12_000)
    _fill_log(tmp_path, events)
    for _ in range(3):
        child = _child(tmp_path, "run", 700)
        assert child.stdout is not None
        for _batch in range(rng.randint(1, 4)):
            assert child.stdout.readline().startswith("batch")
        time.sleep(rng.uniform(0, 0.05))  # somewhere in the next read, decode, write or ack
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, "the writer finished before it was killed"
    _restart_and_check(tmp_path, events)


def _rolled_to(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM ledger_meta WHERE name = 'hours_rolled_to'").fetchone()
    db.close()
    return 0 if row is None else int(row[0])


def _windows_to_the_second(events: Sequence[CostEvent]) -> list[tuple[datetime, datetime]]:
    return [
        (events[3].time + timedelta(seconds=5), events[-3].time - timedelta(seconds=5)),
        (events[100].time - timedelta(minutes=1), events[900].time + timedelta(hours=2, seconds=1)),
    ]


def _assert_windows_exact(ledger: LedgerStore, events: Sequence[CostEvent]) -> None:
    by = ["tenant", "day", "model", "environment"]
    for low, high in _windows_to_the_second(events):
        inside = [e for e in events if low <= e.time < high]
        assert by_key(ledger.event_totals(by, low, high)) == recompute(inside, by)


@pytest.mark.slow
def test_kill_9_inside_an_hour_roll_up_loses_and_doubles_nothing(tmp_path: Path) -> None:
    events = awkward_events(3000, step=timedelta(minutes=3))
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        ledger.write(events)
    lines = _kill_when(_child(tmp_path, "stall-in-roll-up", 1000), "in-roll-up")
    assert lines == ["rolled", "in-roll-up"]
    assert _rolled_to(tmp_path / "ledger.db") == 1000  # the killed step rolled back whole
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        _assert_windows_exact(ledger, events)
        while ledger.maintain(max_events=1000):
            pass
        assert _rolled_to(tmp_path / "ledger.db") == 3000
        _assert_windows_exact(ledger, events)


@pytest.mark.slow
def test_repeated_kill_9_of_hour_roll_ups_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random()
    events = awkward_events(20_000, step=timedelta(seconds=40))
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        ledger.write(events)
    for _ in range(3):  # 100 steps of 200 events; each child is killed within its first 10
        child = _child(tmp_path, "roll-up", 200)
        assert child.stdout is not None
        for _step in range(rng.randint(1, 9)):
            assert child.stdout.readline().startswith("rolled")
        time.sleep(rng.uniform(0, 0.003))  # somewhere in the next step or between two
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, "the roll-up finished before it was killed"
        assert _rolled_to(tmp_path / "ledger.db") % 200 == 0
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        _assert_windows_exact(ledger, events)
        while ledger.maintain():
            pass
        _assert_windows_exact(ledger, events)


class _CountingLedger(InMemoryLedger):
    """An in-memory ledger whose upkeep takes three steps, and says when it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.upkeep_steps = 0
        self.steps_before_write: list[int] = []

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        self.steps_before_write.append(self.upkeep_steps)
        return super().write(events, payloads)

    def maintain(self) -> bool:
        self.upkeep_steps += 1
        return self.upkeep_steps % 3 != 0


def test_run_forever_does_the_ledgers_upkeep_when_idle_and_only_then() -> None:
    # Upkeep runs a step at a time while the log is empty, until the ledger says it is done (then
    # the writer waits on the log again), and starts over after new records have been written.
    log, ledger = InMemoryEventLog(), _CountingLedger()
    stop = threading.Event()
    writer = LedgerWriter(log, ledger, batch_size=100)
    thread = threading.Thread(target=writer.run_forever, args=(stop,), kwargs={"poll": 0.05})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while ledger.upkeep_steps < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # several polls of an empty log: no more upkeep once it said it was done
        assert ledger.upkeep_steps == 3
        log.append([encode_event(e) for e in awkward_events(10)])
        while ledger.upkeep_steps < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert ledger.upkeep_steps == 6
        assert ledger.steps_before_write == [3]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_worker_rolls_up_hours_so_a_sqlite_ledger_has_nothing_left(tmp_path: Path) -> None:
    events = awkward_events(500, step=timedelta(minutes=9))
    log = SQLiteEventLog(tmp_path / "log.db")
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    stop = threading.Event()
    thread = threading.Thread(
        target=LedgerWriter(log, ledger, batch_size=100).run_forever, args=(stop,), kwargs={"poll": 0.05}
    )
    thread.start()
    try:
        log.append([encode_event(e) for e in events])
        deadline = time.monotonic() + 30
        while log.committed("ledger") < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # idle: the writer rolls the 500 events up
    finally:
        stop.set()
        thread.join(timeout=30)
    assert ledger.maintain() is False
    _assert_exactly(ledger, events)
    ledger.close()
    log.close()


class TestTrimLog:
    """``LedgerWriter(trim_log=True)`` drops from the log what the ledger holds: in bounded steps
    under load, everything it may when idle; never what another consumer has not acknowledged."""

    def _records(self, log: InMemoryEventLog) -> int:
        return len(log.read("audit", 1_000_000))

    def test_the_log_keeps_only_the_backlog(self) -> None:
        log = InMemoryEventLog()
        ledger = InMemoryLedger()
        log.register("audit")  # a second consumer, read back below without acknowledging
        events = awkward_events(40)
        log.append([encode_event(e) for e in events])
        writer = LedgerWriter(log, ledger, batch_size=15, trim_log=True)
        writer.catch_up()
        assert writer.trim_log() == 0  # "audit" acknowledged nothing: everything stays
        assert self._records(log) == 40
        log.ack("audit", log.end_offset())
        assert writer.trim_log() == 40
        assert self._records(log) == 0
        assert ledger.event_count() == 40

    def test_run_forever_trims_under_load_and_when_idle(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from outlay.ledger import _writer

        monkeypatch.setattr(_writer, "_TRIM_CHUNK", 7)
        monkeypatch.setattr(_writer, "_TRIM_EVERY", 0.0)
        log = InMemoryEventLog()
        ledger = InMemoryLedger()
        writer = LedgerWriter(log, ledger, batch_size=10, trim_log=True)
        dropped: list[int] = []
        real = log.truncate

        def spy(before_offset: int) -> int:
            count = real(before_offset)
            dropped.append(count)
            return count

        monkeypatch.setattr(log, "truncate", spy)
        log.append([encode_event(e) for e in awkward_events(50)])
        stop = threading.Event()
        thread = threading.Thread(target=writer.run_forever, args=(stop,), kwargs={"poll": 0.01})
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while (ledger.event_count() < 50 or sum(dropped) < 50) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join()
        assert ledger.event_count() == 50
        assert sum(dropped) == 50
        assert max(dropped) <= 10  # bounded steps: a batch at a time, at most _TRIM_CHUNK after the first
        log.register("late")
        assert log.read("late", 100) == []  # nothing of what the ledger holds is left in the log

    def test_a_bad_flag_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="trim_log"):
            LedgerWriter(InMemoryEventLog(), InMemoryLedger(), trim_log="yes")  # type: ignore[arg-type]
