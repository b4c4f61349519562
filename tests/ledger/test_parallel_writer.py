"""``LedgerWriter(processes=N)``: each batch decoded and written by N processes, exactly once in totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import orjson
import psycopg
import pytest

from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay.events import CostEvent, decode_event, encode_event
from outlay.ledger import InMemoryLedger, LedgerWriter, SQLiteLedger
from outlay.ledger._postgres import PostgresLedger
from outlay.stream import InMemoryEventLog, SQLiteEventLog

from .conftest import awkward_events, event
from .test_ledger_writer import _assert_exactly, _log_with


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    ledger = SQLiteLedger(tmp_path / "outlay.db")
    yield ledger
    ledger.close()


def test_two_processes_write_every_event_once_and_reject_the_bad(sqlite_ledger: SQLiteLedger) -> None:
    events = awkward_events(3000)
    log = _log_with(events + events[:500])  # a producer that retried 500 events
    euro = orjson.loads(encode_event(event()))
    euro["data"]["currency"] = "EUR"
    log.append([b"not json", orjson.dumps(euro)])
    writer = LedgerWriter(log, sqlite_ledger, batch_size=1000, processes=2)
    try:
        stats = writer.catch_up()
    finally:
        writer.close()
    assert (stats.read, stats.inserted, stats.duplicates, stats.rejected) == (3502, 3000, 500, 2)
    assert log.committed("ledger") == 3502
    _assert_exactly(sqlite_ledger, events)
    reasons = sorted(r.reason for r in sqlite_ledger.rejected())
    assert len(reasons) == 2 and any("EUR" in r for r in reasons)


def test_a_writer_process_killed_mid_batch_is_replaced_and_nothing_is_doubled(
    sqlite_ledger: SQLiteLedger,
) -> None:
    events = awkward_events(2000)
    log = _log_with(events)
    writer = LedgerWriter(log, sqlite_ledger, batch_size=1000, processes=2)
    try:
        writer.run_once()  # the first batch, written by both processes
        processes = writer._processes
        assert processes is not None
        os.kill(processes._workers[1][0].pid, signal.SIGKILL)
        with pytest.raises(BackendError, match="writer process"):
            writer.run_once()  # the batch is not acknowledged: half of it may be in the ledger
        assert log.committed("ledger") == 1000
        stats = writer.catch_up()  # new processes write the batch again; the ledger ignores the half
    finally:
        writer.close()
    assert stats.inserted + stats.duplicates == 1000
    _assert_exactly(sqlite_ledger, events)


def test_a_writer_process_that_dies_as_it_starts_is_retried_not_fatal(
    sqlite_ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed (OOM killer, an operator) before it read its setup: the parent's send hits a broken
    # pipe. That must be a BackendError, which run_forever retries, not an OSError that ends
    # `outlay worker --processes N` (click turns a broken pipe into a silent exit status 1).
    events = awkward_events(300)
    log = _log_with(events)
    spawn = subprocess.Popen

    def dead_on_arrival(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = spawn(*args, **kwargs)  # type: ignore[call-overload]
        process.kill()
        process.wait()
        return process

    monkeypatch.setattr(subprocess, "Popen", dead_on_arrival)  # what _parallel spawns with
    writer = LedgerWriter(log, sqlite_ledger, batch_size=100, processes=2)
    try:
        with pytest.raises(BackendError, match="did not start"):
            writer.run_once()
        assert log.committed("ledger") == 0
        monkeypatch.undo()
        writer.catch_up()  # new processes start and write everything
    finally:
        writer.close()
    _assert_exactly(sqlite_ledger, events)


def test_writer_processes_exit_when_their_parent_dies(tmp_path: Path) -> None:
    script = f"""
import sys
from outlay.ledger import LedgerWriter, SQLiteLedger
from outlay.stream import InMemoryEventLog
from outlay.events import encode_event
sys.path.insert(0, {str(Path(__file__).parent.parent.parent)!r})
from tests.ledger.conftest import awkward_events
log = InMemoryEventLog()
log.append([encode_event(e) for e in awkward_events(200)])
writer = LedgerWriter(log, SQLiteLedger({str(tmp_path / "outlay.db")!r}), batch_size=100, processes=2)
writer.catch_up()
print(" ".join(str(p.pid) for p, _, _ in writer._processes._workers), flush=True)
sys.stdin.read()  # killed here, its writer processes left behind
"""
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.kill()
        parent.wait(10)
    for pid in pids:  # each sees its pipe close and exits: no orphan keeps the ledger open
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if _zombie(pid):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            pytest.fail(f"writer process {pid} outlived its parent")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_what_cannot_run_in_other_processes_is_refused_up_front() -> None:
    log = InMemoryEventLog()
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL"):
        LedgerWriter(log, InMemoryLedger(), processes=2)
    with pytest.raises(InvalidInput, match="positive integer"):
        LedgerWriter(log, InMemoryLedger(), processes=0)


def test_a_decode_function_the_processes_cannot_import_is_refused(sqlite_ledger: SQLiteLedger) -> None:
    def local_decode(data: bytes) -> CostEvent:  # defined in a function: no process can import it
        return decode_event(data)

    with pytest.raises(ConfigError, match="decode"):
        LedgerWriter(InMemoryEventLog(), sqlite_ledger, processes=2, decode=local_decode)


def test_worker_cli_writes_the_embedded_log_with_several_processes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    log = SQLiteEventLog(home / "events.db")
    events = awkward_events(1500)
    log.append([encode_event(e) for e in events])
    log.close()
    env = {**os.environ, "OUTLAY_URL": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "outlay.cli", "worker", "--once", "--processes", "2", "--batch-size", "500"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1500 read, 1500 written" in done.stdout
    ledger = SQLiteLedger(home / "outlay.db")
    try:
        _assert_exactly(ledger, events)
    finally:
        ledger.close()


def test_two_processes_write_into_postgresql(postgres_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    ledger = PostgresLedger(postgres_url, schema=schema)
    events = awkward_events(2000)
    writer = LedgerWriter(_log_with(events), ledger, batch_size=700, processes=2)
    try:
        stats = writer.catch_up()
        assert (stats.inserted, stats.duplicates) == (2000, 0)
        _assert_exactly(ledger, events)
    finally:
        writer.close()
        ledger.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_decode_function_of_the_callers_script_is_a_config_error_not_a_retry_loop(tmp_path: Path) -> None:
    script = f"""
from outlay._errors import ConfigError
from outlay.events import decode_event
from outlay.ledger import LedgerWriter, SQLiteLedger
from outlay.stream import InMemoryEventLog

def my_decode(data):  # pickles by name, but a new interpreter has no such __main__
    return decode_event(data)

log = InMemoryEventLog()
log.append([b"{{}}"])
writer = LedgerWriter(log, SQLiteLedger({str(tmp_path / "outlay.db")!r}), processes=2, decode=my_decode)
try:
    writer.catch_up()
except ConfigError as exc:
    print("refused:", exc)
"""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "decode function" in done.stdout


def test_a_ledger_opened_by_a_relative_path_is_the_one_written_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = SQLiteLedger("outlay.db")
    events = awkward_events(300)
    writer = LedgerWriter(_log_with(events), ledger, batch_size=100, processes=2)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the processes start here, with the first batch
    try:
        writer.catch_up()
    finally:
        writer.close()
    _assert_exactly(ledger, events)  # not a new ledger in elsewhere/ that nobody reads
    assert not (tmp_path / "elsewhere" / "outlay.db").exists()
    ledger.close()


class _Interrupted:
    """A pipe end whose first ``recv`` is interrupted (Ctrl-C while the parent waits)."""

    def __init__(self, inner: Connection) -> None:
        self.inner, self.fired = inner, False

    def recv(self) -> object:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return self.inner.recv()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_an_interrupted_batch_leaves_no_answer_for_the_next_one(sqlite_ledger: SQLiteLedger) -> None:
    events = awkward_events(400)
    log = _log_with(events)
    writer = LedgerWriter(log, sqlite_ledger, batch_size=100, processes=2)
    processes = writer._processes
    assert processes is not None
    try:
        writer.run_once()
        process, work, answers = processes._workers[0]
        processes._workers[0] = (process, work, _Interrupted(answers))  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            writer.run_once()  # its shares' answers are still on their way
        assert log.committed("ledger") == 100
        stats = writer.catch_up()
        # Each batch was acknowledged on its own answers: none is left over in a pipe.
        assert not any(answers.poll(1.0) for _, _, answers in processes._workers)
    finally:
        writer.close()
    assert stats.read == stats.inserted + stats.duplicates == 300
    _assert_exactly(sqlite_ledger, events)


def test_writer_processes_import_the_outlay_their_parent_imported(tmp_path: Path) -> None:
    import shutil

    import outlay

    vendored = tmp_path / "vendored"
    shutil.copytree(Path(outlay.__file__).parent, vendored / "outlay")  # found by sys.path only
    (tmp_path / "which.py").write_text(
        "import os, outlay\nfrom outlay.events import decode_event\n"
        "def decode(data):\n"
        "    with open(os.environ['WHICH_OUT'], 'a') as f:\n"
        "        f.write(outlay.__file__ + '\\n')\n"
        "    return decode_event(data)\n"
    )
    script = f"""
import sys
sys.path[:0] = [{str(vendored)!r}, {str(tmp_path)!r}]
import which
from outlay.events import encode_event
from outlay.ledger import LedgerWriter, SQLiteLedger
from outlay.stream import InMemoryEventLog
sys.path.insert(0, {str(Path(__file__).parent.parent.parent)!r})
from tests.ledger.conftest import awkward_events
log = InMemoryEventLog()
log.append([encode_event(e) for e in awkward_events(4)])
writer = LedgerWriter(log, SQLiteLedger({str(tmp_path / "outlay.db")!r}), processes=2, decode=which.decode)
writer.catch_up()
writer.close()
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["WHICH_OUT"] = str(tmp_path / "which.txt")
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert set((tmp_path / "which.txt").read_text().split()) == {str(vendored / "outlay" / "__init__.py")}
