"""A ledger writer in its own process, for the kill -9 tests; it prints flushed progress lines.

    python _writer_child.py LOG_PATH LEDGER_PATH MODE BATCH

MODE ``stall-in-transaction``: stalls inside the ledger transaction of the second batch, after its
events were inserted and before the commit (prints ``in-transaction``).
MODE ``stall-before-ack``: stalls after the first batch committed, before the log ack
(prints ``committed LAST_OFFSET``).
MODE ``run``: writes until the log is drained, printing ``batch INSERTED`` after each commit.
MODE ``roll-up``: rolls the ledger's events up by hour, BATCH events a step, printing ``rolled``
after each step, then ``done``.
MODE ``stall-in-roll-up``: the same, but stalls inside the transaction of the second step, after
its rows were written and before the commit (prints ``in-roll-up``).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from outlay.events import CostEvent
from outlay.ledger import LedgerWriter, SQLiteLedger, WriteResult
from outlay.ledger._rows import RollupDeltas
from outlay.stream import SQLiteEventLog


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class StallInTransaction(SQLiteLedger):
    writes = 0

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        self.writes += 1
        return super().write(events, payloads)

    def _apply(  # type: ignore[override]
        self, cursor: sqlite3.Cursor, deltas: RollupDeltas, hours: RollupDeltas | None = None
    ) -> None:
        # Called inside the write transaction, after the events were inserted.
        super()._apply(cursor, deltas, hours)
        if self.writes == 2:
            _say("in-transaction")
            time.sleep(3600)


class StallInRollUp(SQLiteLedger):
    steps = 0

    def maintain(self, *, max_events: int = 5000) -> bool:
        self.steps += 1
        return super().maintain(max_events=max_events)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with super()._transaction() as cursor:
            yield cursor
            if self.steps == 2:  # the roll-up's rows are written; the commit comes after this
                _say("in-roll-up")
                time.sleep(3600)


class StallBeforeAck(SQLiteEventLog):
    def ack(self, consumer: str, offset: int) -> None:
        _say(f"committed {offset}")
        time.sleep(3600)


def main(log_path: str, ledger_path: str, mode: str, batch: int) -> None:
    if mode in ("roll-up", "stall-in-roll-up"):
        rolling = StallInRollUp(ledger_path) if mode == "stall-in-roll-up" else SQLiteLedger(ledger_path)
        while rolling.maintain(max_events=batch):
            _say("rolled")
        _say("done")
        return
    log = StallBeforeAck(log_path) if mode == "stall-before-ack" else SQLiteEventLog(log_path)
    ledger = StallInTransaction(ledger_path) if mode == "stall-in-transaction" else SQLiteLedger(ledger_path)
    writer = LedgerWriter(log, ledger, batch_size=batch)
    while True:
        step = writer.run_once()
        if not step.read:
            break
        _say(f"batch {step.inserted}")
    _say("done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
