"""``outlay worker`` as its own process: follows the log into the ledger, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import outlay
from outlay import Outlay, Usage
from outlay.ledger import SQLiteLedger

WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _worker(home: Path, *extra: str) -> subprocess.Popen[str]:
    exe = shutil.which("outlay") or ""
    command = [exe] if exe else [sys.executable, "-m", "outlay.cli"]
    return subprocess.Popen(
        [*command, "worker", "--url", str(home), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ledger_events(home: Path) -> int:
    ledger = SQLiteLedger(home)
    try:
        return ledger.event_count()
    finally:
        ledger.close()


@pytest.mark.slow
def test_a_worker_process_writes_what_others_record_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    recorder = Outlay(home)
    _ledger_events(home)  # create the ledger file before the worker opens it
    worker = _worker(home)
    try:
        with outlay.attribute(tenant="acme"):
            costs = [
                recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=100 + i)).cost
                for i in range(50)
            ]
        deadline = time.monotonic() + 20
        while _ledger_events(home) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ledger_events(home) == 50
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    assert "50 written" in out
    ledger = SQLiteLedger(home)
    try:
        total = sum((e.cost for e in ledger.entries(*WINDOW) if e.cost is not None), Decimal(0))
        assert total == sum(c for c in costs if c is not None)
    finally:
        ledger.close()
        recorder.log.close()


@pytest.mark.slow
def test_workers_killed_mid_batch_lose_and_double_nothing(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    recorder = Outlay(home)
    _ledger_events(home)
    with outlay.attribute(tenant="acme"):
        for i in range(3000):
            recorder.record_llm(provider="openai", model="gpt-4o-mini", usage=Usage(input_tokens=i + 1))
    for attempt in range(5):
        worker = _worker(home, "--batch-size", "200")
        time.sleep(0.4 + attempt * 0.05)
        worker.kill()  # SIGKILL, wherever it is
        worker.communicate(timeout=20)
    finisher = _worker(home, "--once")
    _out, err = finisher.communicate(timeout=60)
    assert finisher.returncode == 0, err
    assert _ledger_events(home) == 3000
    recorder.log.close()


def test_worker_given_only_a_sqlite_ledger_reads_the_log_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from outlay.cli import main

    home = tmp_path / "data" / "prod.db"
    with Outlay(home) as recorder, outlay.attribute(tenant="acme"):
        for i in range(3):
            recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=10 + i))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for name in ("OUTLAY_URL", "OUTLAY_STREAM_URL", "OUTLAY_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    assert _ledger_events(home) == 0
    result = CliRunner().invoke(main, ["worker", "--ledger", str(home), "--once"])
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output
    assert _ledger_events(home) == 3
    assert not (elsewhere / ".outlay").exists()  # no stray log under the working directory
    # --once also rolls the events up by hour, as a following worker does when idle: a worker run
    # from cron never did, so windows with times of day were always read from the events.
    with sqlite3.connect(home) as db:
        rolled = db.execute("SELECT value FROM ledger_meta WHERE name = 'hours_rolled_to'").fetchone()
        assert (
            rolled is not None and rolled[0] == db.execute("SELECT MAX(seq) FROM ledger_events").fetchone()[0]
        )


def _committed(home: Path) -> tuple[int, int]:
    from outlay.stream import SQLiteEventLog

    log = SQLiteEventLog(home.with_name("events.db"))
    try:
        return log.committed("ledger"), log.end_offset()
    finally:
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--once"]], ids=["follow", "once"])
def test_sigterm_finishes_the_batch_in_hand_and_leaves_the_backlog(tmp_path: Path, mode: list[str]) -> None:
    # Before: --once ignored SIGTERM and Ctrl-C (catch_up never looked at the stop event), and
    # both modes wrote the whole rest of the log on the way out (Outlay.close's own catch-up).
    home = tmp_path / "outlay.db"
    with Outlay(home, mode="batching") as recorder, outlay.attribute(tenant="acme"):
        for i in range(20_000):
            recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=i + 1))
    _ledger_events(home)
    worker = _worker(home, "--batch-size", "20", *mode)
    try:
        deadline = time.monotonic() + 30
        while _committed(home)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    committed, end = _committed(home)
    assert 0 < committed < end
    assert _ledger_events(home) == committed  # every acknowledged event is written, none beyond
    assert f"{committed} written" in out


def test_once_reports_a_failing_log_as_an_error_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    with Outlay(home) as recorder, outlay.attribute(tenant="acme"):
        for i in range(2000):
            recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=i + 1))
    _ledger_events(home)
    log_file = home.with_name("events.db")
    with log_file.open("r+b") as f:  # damage pages in the middle of the log's table
        f.seek(log_file.stat().st_size // 2)
        f.write(b"\xff" * 4096)
    worker = _worker(home, "--once")
    _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1
    assert "Traceback" not in err
    assert "Error: SQLite event log" in err
    assert "malformed" in err


def test_worker_given_the_event_log_as_its_ledger_says_so(tmp_path: Path) -> None:
    # Before: the log file silently got ledger tables, the worker followed a new, empty
    # events.events.db beside it, printed "0 read" and exited 0; the events were never written.
    from click.testing import CliRunner

    from outlay.cli import main

    home = tmp_path / "outlay.db"
    with Outlay(home) as recorder, outlay.attribute(tenant="acme"):
        recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=10))
    log_file = tmp_path / "events.db"
    for option in ("--url", "--ledger"):
        result = CliRunner().invoke(main, ["worker", option, str(log_file), "--once"])
        assert result.exit_code == 1, result.output
        assert "is an outlay event log, not a ledger" in result.output
    with Outlay(home) as pipeline:
        assert pipeline.log.end_offset() == 1
    # A ledger that shares the log's file on purpose is fine.
    shared = tmp_path / "shared.db"
    with Outlay(shared, stream_url=str(shared)) as recorder, outlay.attribute(tenant="acme"):
        recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=10))
    result = CliRunner().invoke(main, ["worker", "--url", str(shared), "--stream", str(shared), "--once"])
    assert result.exit_code == 0, result.output
    assert _ledger_events(shared) == 1


def _log_records(home: Path) -> int:
    with sqlite3.connect(home.with_name("events.db")) as db:
        return int(db.execute("SELECT COUNT(*) FROM log").fetchone()[0])


def test_trim_log_drops_what_the_ledger_holds_and_keeps_what_a_consumer_still_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded log grew for ever: every record stayed after the ledger held it. With
    --trim-log the worker drops what it wrote, except what another consumer has not read yet."""
    from click.testing import CliRunner

    from outlay.cli import main
    from outlay.stream import SQLiteEventLog

    for name in ("OUTLAY_URL", "OUTLAY_STREAM_URL", "OUTLAY_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "outlay.db"
    with Outlay(home) as recorder, outlay.attribute(tenant="acme"):
        for i in range(30):
            recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=10 + i))
    exporter = SQLiteEventLog(home.with_name("events.db"))
    exporter.register("exporter")
    exporter.ack("exporter", exporter.read("exporter", 10)[-1].offset)  # it has read 10 of 30
    exporter.close()

    plain = CliRunner().invoke(main, ["worker", "--url", str(home), "--once"])
    assert plain.exit_code == 0, plain.output
    assert _ledger_events(home) == 30
    assert _log_records(home) == 30  # by default the log keeps everything, for replays

    trimmed = CliRunner().invoke(main, ["worker", "--url", str(home), "--once", "--trim-log"])
    assert trimmed.exit_code == 0, trimmed.output
    assert _log_records(home) == 20  # the exporter's 20 unread records stay

    exporter = SQLiteEventLog(home.with_name("events.db"))
    assert len(exporter.read("exporter", 100)) == 20
    exporter.ack("exporter", exporter.end_offset())
    exporter.close()
    again = CliRunner().invoke(main, ["worker", "--url", str(home), "--once", "--trim-log"])
    assert again.exit_code == 0, again.output
    assert _log_records(home) == 0
    assert _ledger_events(home) == 30  # nothing written twice, nothing lost


def test_a_worker_on_a_nats_stream_with_no_ledger_named_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str
) -> None:
    # OUTLAY_LEDGER_URL missing or misspelt (OUTLAY_LEDGER_ULR): the worker used to take the shared
    # consumer's events, acknowledge them and write them into ./.outlay/outlay.db, where no report of
    # the deployment reads them.
    from click.testing import CliRunner

    from outlay.cli import main
    from outlay.stream import open_event_log

    tag = uuid.uuid4().hex[:12]
    stream, prefix = f"T_{tag}", f"outlay.test.{tag}"
    url = f"{nats_url}?stream={stream}&subject_prefix={prefix}"
    monkeypatch.chdir(tmp_path)
    for name in ("OUTLAY_URL", "OUTLAY_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTLAY_STREAM_URL", url)
    monkeypatch.setenv("OUTLAY_LEDGER_ULR", "postgresql://db/outlay")  # the typo
    try:
        with Outlay() as recorder, outlay.attribute(tenant="acme"):
            recorder.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=10))
        result = CliRunner().invoke(main, ["worker", "--once"])
        assert result.exit_code == 1, result.output
        assert "no ledger is named" in result.output and "OUTLAY_LEDGER_URL" in result.output
        assert not (tmp_path / ".outlay").exists()
        with open_event_log(url) as log:  # the event is still there for the deployment's workers
            assert log.end_offset() == 1, log.end_offset()
            assert len(log.read("ledger", max_records=10, timeout=5.0)) == 1
        # Naming the ledger, even the local default, is a choice the worker then follows.
        result = CliRunner().invoke(main, ["worker", "--once", "--url", str(tmp_path / "local")])
        assert result.exit_code == 0 and "1 written" in result.output, result.output
    finally:
        asyncio.run(_delete_stream(nats_url, stream))


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def test_a_tls_nats_stream_is_not_taken_for_an_embedded_log() -> None:
    # With tls:// (NATS over TLS) a process asking for reports ran the ledger writer on the shared
    # consumer itself, as if the stream were its own embedded log.
    from outlay.stream import InMemoryEventLog

    for url in ("tls://nats.internal:4222", "NATS://nats.internal:4222"):
        with Outlay("memory://", stream_url=url, log=InMemoryEventLog()) as pipeline:
            assert not pipeline.embedded
