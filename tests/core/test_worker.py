"""``outlay worker`` as its own process: follows the log into the ledger, stops cleanly on SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
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
