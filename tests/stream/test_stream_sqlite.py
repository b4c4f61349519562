"""SQLiteEventLog: the conformance suite, plus what only a shared file can do or get wrong."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outlay._errors import BackendError, ConfigError
from outlay._sqlite import compiled_inserts
from outlay.stream import EventLog, SQLiteEventLog

from .conformance import EventLogConformance, read_all

CHILD = Path(__file__).with_name("_crash_child.py")


class _SQLiteFactory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> EventLog:
        return SQLiteEventLog(self.path)

    def reopen(self, log: EventLog) -> EventLog:
        # Open a second instance before letting go of the first, as a restarted process would.
        fresh = SQLiteEventLog(self.path)
        log.close()
        return fresh


class TestSQLiteEventLog(EventLogConformance):
    @pytest.fixture
    def factory(self, tmp_path: Path) -> _SQLiteFactory:
        return _SQLiteFactory(tmp_path / "events.db")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SQLiteEventLog]:
    log = SQLiteEventLog(tmp_path / "events.db")
    yield log
    log.close()


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# -- the file ------------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode_with_the_documented_tables(log: SQLiteEventLog) -> None:
    log.append([b"x"])
    conn = sqlite3.connect(log.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute('SELECT "offset", payload FROM log').fetchall() == [(1, b"x")]
        assert conn.execute("SELECT appended_at FROM log").fetchone()[0] > 1_600_000_000_000_000
        log.ack("ledger", 1)
        assert conn.execute('SELECT name, "offset" FROM consumers').fetchall() == [("ledger", 1)]
    finally:
        conn.close()


def test_a_file_that_is_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(BackendError, match=r"notes\.db") as info:
        SQLiteEventLog(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_missing_directory_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="open"):
        SQLiteEventLog(tmp_path / "missing" / "events.db")


def test_a_log_written_by_a_newer_outlay_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventLog(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(BackendError, match="upgrade outlay"):
        SQLiteEventLog(path)


@pytest.mark.parametrize("path", ["", ":memory:", "file:x.db?mode=memory"])
def test_memory_and_uri_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigError) as info:
        SQLiteEventLog(path)
    assert info.value.field == "path"


# -- group commit --------------------------------------------------------------------------------


def _hold_write_lock(path: str) -> sqlite3.Connection:
    """Take the file's write lock from another connection, as another process appending would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def _refuse_poison(path: str) -> None:
    """Make the file refuse a payload of b"poison" (a commit that fails half-way through a group)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON log WHEN NEW.payload = x'706f69736f6e'"
        " BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
    )
    conn.commit()
    conn.close()


def _append_in_threads(
    log: SQLiteEventLog, payloads: list[bytes]
) -> tuple[list[threading.Thread], dict[bytes, object]]:
    results: dict[bytes, object] = {}

    def append(payload: bytes) -> None:
        try:
            results[payload] = log.append([payload])
        except BaseException as exc:
            results[payload] = exc

    threads = [threading.Thread(target=append, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    return threads, results


def test_appends_that_arrive_during_a_commit_share_the_next_one(log: SQLiteEventLog) -> None:
    blocker = _hold_write_lock(log.path)
    leader, leader_result = _append_in_threads(log, [b"leader"])
    _wait_until(lambda: log._leading, "the first append to lead")
    followers, results = _append_in_threads(log, [f"f{i}".encode() for i in range(7)])
    _wait_until(lambda: len(log._queue) == 7, "seven appends to queue behind the leader")
    blocker.execute("COMMIT")
    blocker.close()
    for t in leader + followers:
        t.join()
    assert leader_result[b"leader"] == [1]
    offsets = [o for r in results.values() if isinstance(r, list) for o in r]
    assert sorted(offsets) == list(range(2, 9))
    conn = sqlite3.connect(log.path)
    # One transaction stamped them all: the seven followers share a single commit time.
    stamps = conn.execute('SELECT DISTINCT appended_at FROM log WHERE "offset" > 1').fetchall()
    conn.close()
    assert len(stamps) == 1


def test_a_failed_commit_fails_every_caller_in_its_group_and_writes_none_of_them(
    log: SQLiteEventLog,
) -> None:
    _refuse_poison(log.path)
    blocker = _hold_write_lock(log.path)
    leader, leader_result = _append_in_threads(log, [b"leader"])
    _wait_until(lambda: log._leading, "the first append to lead")
    group = [b"a", b"b", b"poison", b"c"]
    followers, results = _append_in_threads(log, group)
    _wait_until(lambda: len(log._queue) == 4, "four appends to queue behind the leader")
    blocker.execute("COMMIT")
    blocker.close()
    for t in leader + followers:
        t.join()
    assert leader_result[b"leader"] == [1]
    for payload in group:
        error = results[payload]
        assert isinstance(error, BackendError), (payload, error)
        assert "poison refused" in str(error)
        assert isinstance(error.__cause__, sqlite3.Error)
    assert len({id(results[p]) for p in group}) == 4  # each caller gets its own exception
    assert [r.payload for r in read_all(log, "checker")] == [b"leader"]
    assert log.append([b"after"]) == [2]  # the log is fine afterwards; no offset was lost


def test_close_waits_for_appends_already_queued(log: SQLiteEventLog) -> None:
    blocker = _hold_write_lock(log.path)
    threads, results = _append_in_threads(log, [b"1", b"2", b"3"])
    _wait_until(lambda: log._leading and len(log._queue) == 2, "appends to queue")
    closer = threading.Thread(target=log.close)
    closer.start()
    time.sleep(0.05)
    blocker.execute("COMMIT")
    blocker.close()
    closer.join()
    for t in threads:
        t.join()
    assert all(isinstance(r, list) for r in results.values())
    with SQLiteEventLog(log.path) as reopened:
        assert reopened.end_offset() == 3


# -- several processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_several_processes_append_to_and_read_the_same_file(log: SQLiteEventLog) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "append", log.path, f"p{n}", "150"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    # Meanwhile this process appends too, and a reader here waits for the children's records.
    mine = [log.append([f"parent-{i}".encode()])[0] for i in range(100)]
    reported: dict[bytes, int] = {}
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        for line in out.splitlines():
            payload, offset = line.split()
            reported[payload.encode()] = int(offset)
    reported.update({f"parent-{i}".encode(): o for i, o in enumerate(mine)})
    records = read_all(log, "checker")
    assert len(records) == 550
    assert {r.payload: r.offset for r in records} == reported


@pytest.mark.slow
def test_a_waiting_reader_sees_records_another_process_appends(log: SQLiteEventLog) -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "append", log.path, "remote", "1", "--delay", "0.3"],
        stdout=subprocess.DEVNULL,
    )
    try:
        records = log.read("c", timeout=30)
    finally:
        child.wait(timeout=30)
    assert [r.payload for r in records] == [b"remote-0"]


# -- try_append: for callers that must not wait (the gateway's event loop) ------------------------


def test_try_append_gives_up_at_once_while_another_process_holds_the_write_lock(
    log: SQLiteEventLog,
) -> None:
    blocker = _hold_write_lock(log.path)
    began = time.monotonic()
    assert log.try_append([b"now"]) is None
    assert time.monotonic() - began < 1.0  # no busy wait (the log's busy_timeout is 30 s)
    blocker.execute("COMMIT")
    blocker.close()
    assert log.end_offset() == 0  # nothing was appended
    # The busy wait is back for everyone else: a plain append still waits for the lock.
    assert log._writer.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert log.try_append([b"later"]) == [1]


def test_try_append_gives_up_while_an_append_of_this_process_is_committing(log: SQLiteEventLog) -> None:
    blocker = _hold_write_lock(log.path)
    leader, result = _append_in_threads(log, [b"leader"])
    _wait_until(lambda: log._leading, "the first append to lead")
    assert log.try_append([b"impatient"]) is None  # it would queue behind the leader
    blocker.execute("COMMIT")
    blocker.close()
    for t in leader:
        t.join()
    assert result[b"leader"] == [1]
    assert log.try_append([b"next"]) == [2]  # and the group commit is left in order


def test_try_append_that_fails_raises_and_the_log_goes_on(log: SQLiteEventLog) -> None:
    _refuse_poison(log.path)
    with pytest.raises(BackendError, match="poison refused"):
        log.try_append([b"poison"])
    assert log.end_offset() == 0
    assert log.append([b"fine"]) == [1]
    assert log.try_append([b"also fine"]) == [2]


_OPEN_AT_ONCE = """
import sys, time
from outlay.budgets import SQLiteBudgetStore
from outlay.finance import SQLitePeriodStore
from outlay.keys import SQLiteKeyStore
from outlay.ledger import SQLiteLedger
from outlay.stream import SQLiteEventLog
folder, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
SQLiteEventLog(folder + "/events.db").close()
SQLiteBudgetStore(folder + "/budgets.db").close()
SQLiteKeyStore(folder + "/keys.db").close()
SQLiteLedger(folder + "/outlay.db").close()
SQLitePeriodStore(folder + "/periods.db").close()
"""


@pytest.mark.slow
def test_processes_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Workers of one server start together: SQLite refuses all but one switch of a new file to
    # WAL at once ("database is locked", without waiting), which made ~1 in 5 such opens fail.
    for attempt in range(4):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        start = time.time() + 1.0
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT_ONCE, str(folder), str(start)], stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        errors = [child.communicate(timeout=60)[1].decode() for child in children]
        assert [child.returncode for child in children] == [0] * 4, errors


def test_a_thread_busy_in_python_does_not_slow_appends_row_by_row(tmp_path: Path) -> None:
    """A batch is appended with the compiled inserts, which let the GIL go once per block of rows.
    executemany lets it go and takes it back around every row, and in a process with a thread busy
    in Python (the app recording, an event loop) each take waits a switch interval: a batching
    recorder's flush of 10,000 events took 17 s here (500 took 0.86 s; 0.03 s now)."""
    if compiled_inserts() is None:
        if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
            pytest.fail("the compiled inserts are not in use (OUTLAY_REQUIRE_SERVICES=1: CI builds them)")
        pytest.skip("the compiled inserts are not in use (no C compiler at install)")
    log = SQLiteEventLog(tmp_path / "events.db")
    payloads = [b'{"n": %d}' % n for n in range(10_000)]
    done = threading.Event()

    def busy() -> None:
        while not done.is_set():
            sum(range(1000))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.02)
    thread = threading.Thread(target=busy)
    thread.start()
    try:
        began = time.monotonic()
        log.append(payloads)
        elapsed = time.monotonic() - began
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(previous)
    assert [r.payload for r in read_all(log, "c")] == payloads
    assert elapsed < 5
    log.close()
