"""`outlay worker` on NATS JetStream + PostgreSQL, killed -9 twenty times while events keep coming:
nothing lost, nothing doubled."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from outlay._money import money_sum
from outlay.ledger._postgres import PostgresLedger
from outlay.stream import NatsEventLog

from ._nats_helpers import delete_stream, encoded, make_event, unique_stream

KILLS = 20
WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def urls(nats_url: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    stream, prefix = unique_stream()
    schema = f"kill9_{uuid.uuid4().hex[:10]}"
    # ack_wait=1: a batch held by a killed worker is handed out again after a second.
    stream_url = f"{nats_url}?stream={stream}&subject_prefix={prefix}&ack_wait=1"
    sep = "&" if "?" in postgres_url else "?"
    yield stream_url, f"{postgres_url}{sep}schema={schema}"
    delete_stream(nats_url, stream)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _worker(stream_url: str, ledger_url: str, *extra: str) -> subprocess.Popen[str]:
    exe = shutil.which("outlay")
    command = [exe] if exe else [sys.executable, "-m", "outlay.cli"]
    return subprocess.Popen(
        [*command, "worker", "--stream", stream_url, "--ledger", ledger_url, "--batch-size", "200", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_worker_killed_twenty_times_mid_batch_loses_and_doubles_nothing(urls: tuple[str, str]) -> None:
    stream_url, ledger_url = urls
    log = NatsEventLog.from_url(stream_url)
    ledger = PostgresLedger(ledger_url)  # creates the schema before the workers race for it
    sent: list[Decimal] = []
    stop = threading.Event()

    def produce() -> None:  # a steady stream of events while the workers die
        i = 0
        while not stop.is_set():
            batch = [make_event(i + k) for k in range(50)]
            log.append([encoded(e) for e in batch])
            sent.extend(e.cost for e in batch if e.cost is not None)
            i += 50
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    progress = []
    try:
        for kill in range(KILLS):
            before = ledger.event_count()
            worker = _worker(stream_url, ledger_url)
            if kill % 2:
                time.sleep(rng.uniform(0.8, 1.4))  # start-up, then somewhere in a read, write or ack
            else:
                # once it has written (a loaded machine can take longer than the above to start):
                # somewhere in its next reads, writes or acks
                deadline = time.monotonic() + 30
                while ledger.event_count() == before and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 0.4))
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=30)
            assert worker.returncode == -signal.SIGKILL, "the worker exited before it was killed"
            progress.append(ledger.event_count())
    finally:
        stop.set()
        producer.join()
    assert progress[-1] > 0 and progress == sorted(progress)  # the killed workers did write
    finisher = _worker(stream_url, ledger_url, "--once")
    _out, err = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, err
    entries = list(ledger.entries(*WINDOW))
    assert len(entries) == len(sent)  # nothing lost, nothing doubled
    assert len({e.event.event_id for e in entries}) == len(sent)
    assert money_sum(e.cost for e in entries if e.cost is not None) == money_sum(sent)
    ledger.close()
    log.close()
