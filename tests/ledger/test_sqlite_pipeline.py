"""Big batches in the SQLite ledger: inserted in chunks on a second thread while the next chunk's
rows are built. Whatever the chunking, a batch is one transaction with the same totals as the
reference (in-memory) ledger, duplicates are skipped, and an error anywhere undoes the batch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import outlay.ledger._sqlite as sqlite_ledger
from outlay._errors import BackendError
from outlay.events import CostEvent, encode_event
from outlay.ledger import InMemoryLedger, LedgerStore, SQLiteLedger

from .conformance import DAY0, DAY_END, by_key
from .conftest import awkward_events

BY = ["tenant", "day", "feature", "model", "environment", "origin"]
CHUNK = sqlite_ledger._CHUNK_ROWS


def snapshot(ledger: LedgerStore, events: Sequence[CostEvent]) -> tuple[object, ...]:
    start = min(e.time for e in events)
    end = max(e.time for e in events) + timedelta(seconds=1)
    runs = sorted({e.run_id for e in events if e.run_id})
    return (
        ledger.event_count(),
        by_key(ledger.rollup_totals(BY, DAY0, DAY_END)),
        by_key(ledger.event_totals(BY, start, end)),
        {(r.run_id, r.events, r.unpriced_events, r.cost) for r in ledger.runs(run_ids=runs)},
        [entry.event for entry in ledger.entries(start, end)],
    )


def insert_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("outlay-ledger-insert")]


def seqs(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT event_id FROM ledger_events ORDER BY seq")]
    db.close()
    return ids


@pytest.mark.parametrize("with_payloads", [True, False])
def test_a_big_batch_with_duplicates_has_the_reference_totals_and_keeps_its_order(
    tmp_path: Path, with_payloads: bool
) -> None:
    events = awkward_events(3 * CHUNK + 37, step=timedelta(minutes=3))
    known = events[CHUNK + 5 : CHUNK + 25]  # written before: they fall inside the second chunk
    batch = [*events, *events[:3], events[2 * CHUNK]]  # ids repeated within the batch too
    payloads = [encode_event(e) for e in batch] if with_payloads else None
    reference = InMemoryLedger()
    reference.write(events)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert ledger.write(known).inserted == len(known)
        result = ledger.write(batch, payloads)
        assert (result.inserted, result.duplicates) == (len(events) - len(known), len(known) + 4)
        assert snapshot(ledger, events) == snapshot(reference, events)
        assert insert_threads(), "a batch of several chunks goes through the insert thread"
        again = ledger.write(batch, payloads)  # a replay changes nothing
        assert (again.inserted, again.duplicates) == (0, len(batch))
        assert snapshot(ledger, events) == snapshot(reference, events)
    fresh = [e.event_id for e in events if e not in known]
    assert seqs(tmp_path / "l.db") == [e.event_id for e in known] + fresh
    assert not insert_threads(), "close() stops the insert thread"


def test_a_chunk_that_fails_in_sqlite_undoes_the_whole_batch(tmp_path: Path) -> None:
    events = awkward_events(2 * CHUNK + 100)
    poison = events[CHUNK + 40].event_id  # in the second chunk, inserted while the third is built
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write(events[:10])
        before = snapshot(ledger, events)
        with sqlite3.connect(tmp_path / "l.db") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON ledger_events"
                f" WHEN NEW.event_id = '{poison}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            )
        db.close()
        with pytest.raises(BackendError, match="refused by test"):
            ledger.write(events)
        assert snapshot(ledger, events) == before
        with sqlite3.connect(tmp_path / "l.db") as db:
            db.execute("DROP TRIGGER refuse")
        db.close()
        assert ledger.write(events).inserted == len(events) - 10
        reference = InMemoryLedger()
        reference.write(events)
        assert snapshot(ledger, events) == snapshot(reference, events)


def test_an_error_while_building_rows_waits_for_the_chunk_in_flight_then_undoes_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = awkward_events(3 * CHUNK)
    real = sqlite_ledger.event_rows
    calls: list[int] = []

    def failing_on_the_third_chunk(*args: Any) -> list[Any]:
        calls.append(1)
        if len(calls) == 3:  # the first chunk is in the ledger's transaction, the second in flight
            raise RuntimeError("row building failed")
        return real(*args)

    with SQLiteLedger(tmp_path / "l.db") as ledger:
        monkeypatch.setattr(sqlite_ledger, "event_rows", failing_on_the_third_chunk)
        with pytest.raises(RuntimeError, match="row building failed"):
            ledger.write(events)
        monkeypatch.setattr(sqlite_ledger, "event_rows", real)
        assert ledger.event_count() == 0
        assert ledger.rollup_totals([], DAY0, DAY_END) == []
        assert ledger.write(events).inserted == len(events)  # the connection is usable again
        assert ledger.event_count() == len(events)


def test_a_low_variable_limit_makes_smaller_chunks(tmp_path: Path) -> None:
    # SQLite builds older than 3.32 allow 999 values per statement: chunks of 45 rows there.
    events = awkward_events(200)
    reference = InMemoryLedger()
    reference.write(events)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger._connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        assert ledger._chunk_rows(len(events)) == 999 // 22
        assert ledger.write(events).inserted == len(events)
        assert snapshot(ledger, events) == snapshot(reference, events)
        assert insert_threads()


def test_small_batches_never_start_the_insert_thread(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        for _ in range(3):
            ledger.write(awkward_events(2 * CHUNK - 1))
        assert ledger._insert_thread is None and not insert_threads()


def test_threads_writing_big_overlapping_batches_at_once_count_every_event_once(tmp_path: Path) -> None:
    events = awkward_events(6 * CHUNK, step=timedelta(minutes=1))
    # Three writers, each with two batches; every batch overlaps the next writer's first one.
    batches = [[events[i * CHUNK * 2 : (i + 1) * CHUNK * 2 + CHUNK // 2]] for i in range(3)]
    for i, own in enumerate(batches):
        own.append(events[((i + 1) % 3) * CHUNK * 2 : ((i + 1) % 3) * CHUNK * 2 + 3 * CHUNK])
    errors: list[BaseException] = []
    inserted: list[int] = []
    with SQLiteLedger(tmp_path / "l.db") as ledger:

        def writer(own: list[list[CostEvent]]) -> None:
            try:
                for batch in own:
                    inserted.append(ledger.write(batch).inserted)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(own,)) for own in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert sum(inserted) == len(events)
        reference = InMemoryLedger()
        reference.write(events)
        assert snapshot(ledger, events) == snapshot(reference, events)
