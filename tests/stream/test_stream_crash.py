"""Crash tests with real processes: kill -9 a producer or a consumer, then look at the file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from outlay.stream import SQLiteEventLog

from .conformance import read_all

CHILD = Path(__file__).with_name("_crash_child.py")

pytestmark = pytest.mark.slow


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True)


def _kill_after(child: subprocess.Popen[str], lines_wanted: int, marker: str = "") -> list[str]:
    """Read the child's output until ``lines_wanted`` lines (containing ``marker``) arrived, kill -9
    it, and return everything it printed (what it printed is what its calls had returned)."""
    assert child.stdout is not None
    lines: list[str] = []
    seen = 0
    for line in child.stdout:
        lines.append(line)
        seen += marker in line
        if seen >= lines_wanted:
            break
    os.kill(child.pid, signal.SIGKILL)
    lines.extend(child.stdout.read().splitlines(keepends=True))
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
    # A line cut short by the kill was never a complete promise.
    return [line.rstrip("\n") for line in lines if line.endswith("\n")]


@pytest.mark.parametrize("threads", [1, 4])
def test_every_append_that_returned_survives_kill_9_exactly_once(tmp_path: Path, threads: int) -> None:
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).randint(10, 300)
    path = str(tmp_path / "events.db")
    child = _start("append", path, "c", "0", "--threads", str(threads))
    lines = _kill_after(child, kill_after)
    promised = {payload.encode(): int(offset) for payload, offset in (line.split() for line in lines)}
    assert len(promised) >= kill_after

    with SQLiteEventLog(path) as log:
        records = read_all(log, "checker")
        end = log.end_offset()
    stored = {r.payload: r.offset for r in records}
    assert len(stored) == len(records), f"a payload is stored twice (seed {seed})"
    assert [r.offset for r in records] == list(range(1, end + 1)), f"offsets have a gap (seed {seed})"
    for payload, offset in promised.items():
        assert stored.get(payload) == offset, f"{payload!r} returned {offset} but is lost (seed {seed})"
    # Appends in flight at the kill may or may not have committed, but nothing else is invented.
    assert len(stored) - len(promised) <= threads


def test_a_consumer_killed_before_its_ack_reads_the_batch_again(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    with SQLiteEventLog(path) as log:
        log.append([f"e{i}".encode() for i in range(1, 101)])
    stall_at = random.randint(0, 8)  # batches 0..stall_at-1 are acked, batch stall_at is not
    child = _start("consume", path, "ledger", "10", str(stall_at))
    lines = _kill_after(child, stall_at + 1, marker="read")
    assert lines[-1] == f"read {stall_at * 10 + 1} {stall_at * 10 + 10}"
    assert f"acked {stall_at * 10 + 10}" not in lines

    with SQLiteEventLog(path) as log:
        assert log.committed("ledger") == stall_at * 10
        again = log.read("ledger", max_records=10)
    assert [r.offset for r in again] == list(range(stall_at * 10 + 1, stall_at * 10 + 11))
    assert again[0].payload == f"e{stall_at * 10 + 1}".encode()


def test_kill_9_loses_nothing_a_batching_flush_returned(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    child = _start("batch-flush", path)
    lines = _kill_after(child, random.randint(2, 20))
    last_flushed = int(lines[-1].split()[1])

    with SQLiteEventLog(path) as log:
        payloads = [r.payload for r in read_all(log, "checker")]
    assert not [p for p, n in Counter(payloads).items() if n > 1]
    # Appended in order from one thread: the durable part is a prefix covering every flush.
    assert len(payloads) > last_flushed
    assert payloads == [f"batch-{i}".encode() for i in range(len(payloads))]


def test_a_clean_exit_drains_the_batching_buffer(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    done = subprocess.run(
        [sys.executable, str(CHILD), "batch-exit", path, "500"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "buffered 500"  # nothing was durable before exit began
    with SQLiteEventLog(path) as log:
        payloads = [r.payload for r in read_all(log, "checker")]
    assert payloads == [f"exit-{i}".encode() for i in range(500)]
