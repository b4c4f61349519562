"""Run the ledger conformance suite against the in-memory and SQLite ledgers (see conftest)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay._rating import Rating
from outlay.ledger import InMemoryLedger, SQLiteLedger, open_ledger
from outlay.stream import SQLiteEventLog

from .conformance import DAY0, DAY_END, LedgerStoreConformance, by_key
from .conftest import awkward_events, event


class TestLedgerConformance(LedgerStoreConformance):
    """Parametrised over every embedded ledger by the ``make_ledger`` fixture."""


def test_sqlite_ledger_survives_reopening(tmp_path: Path) -> None:
    events = awkward_events(100)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write(events)
        before = ledger.rollup_totals(["tenant", "day"], DAY0, DAY_END)
    with SQLiteLedger(tmp_path / "l.db") as reopened:
        assert reopened.write(events).duplicates == 100
        assert reopened.rollup_totals(["tenant", "day"], DAY0, DAY_END) == before


def _rolled_to(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM ledger_meta WHERE name = 'hours_rolled_to'").fetchone()
    db.close()
    return 0 if row is None else int(row[0])


def test_sqlite_ledger_rolls_up_hours_in_bounded_steps_and_totals_never_change(tmp_path: Path) -> None:
    # Windows to the second over events that are not rolled up by hour, partly rolled up, then all:
    # the totals are the same each time; re-rating a rolled-up event and writing a late event into
    # a rolled-up hour change them exactly as they change the day rollups.
    path = tmp_path / "l.db"
    events = awkward_events(600, step=timedelta(minutes=11))
    windows = [
        (events[5].time + timedelta(seconds=7), events[-5].time - timedelta(minutes=3)),
        (events[40].time - timedelta(minutes=1), events[41].time + timedelta(hours=5, seconds=1)),
    ]
    by = ["tenant", "day", "model", "environment"]

    def snapshot(ledger: SQLiteLedger) -> list[dict[object, object]]:
        return [by_key(ledger.event_totals(by, low, high)) for low, high in windows]

    with SQLiteLedger(path) as ledger:
        ledger.write(events[:500])
        before = snapshot(ledger)
        assert ledger.maintain(max_events=200) is True
        assert _rolled_to(path) == 200
        assert snapshot(ledger) == before
        while ledger.maintain(max_events=200):
            pass
        assert _rolled_to(path) == 500
        assert snapshot(ledger) == before
        assert ledger.maintain() is False  # nothing left: no change
        # Late arrivals into rolled-up hours, and a re-rating of rolled-up events.
        ledger.write(events[100:600])
        ledger.append_adjustments(
            [
                (
                    e.event_id,
                    Rating(cost=Decimal("0.000000000000000011") * i, priced=True, price_version="v2"),
                )
                for i, e in enumerate(events)
                if i % 7 == 0
            ]
        )
        after = snapshot(ledger)
    with SQLiteLedger(tmp_path / "reference.db") as reference:  # the same, never rolled up
        reference.write(events)
        reference.append_adjustments(
            [
                (
                    e.event_id,
                    Rating(cost=Decimal("0.000000000000000011") * i, priced=True, price_version="v2"),
                )
                for i, e in enumerate(events)
                if i % 7 == 0
            ]
        )
        assert snapshot(reference) == after
        assert after != before


def test_sqlite_ledger_from_before_hour_rollups_opens_and_rolls_up(tmp_path: Path) -> None:
    # A ledger file written before hour rollups existed: no hour table, no watermark. It opens,
    # answers from the events, and rolls up like any other.
    path = tmp_path / "old.db"
    events = awkward_events(300, step=timedelta(minutes=17))
    low, high = events[2].time + timedelta(seconds=30), events[-2].time
    with SQLiteLedger(path) as ledger:
        ledger.write(events)
        expected = by_key(ledger.event_totals(["tenant", "model"], low, high))
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE ledger_rollups_hour")
        db.execute("DROP TABLE ledger_meta")
    db.close()
    with SQLiteLedger(path) as reopened:
        assert by_key(reopened.event_totals(["tenant", "model"], low, high)) == expected
        while reopened.maintain():
            pass
        assert _rolled_to(path) == 300
        assert by_key(reopened.event_totals(["tenant", "model"], low, high)) == expected
        with pytest.raises(InvalidInput, match="max_events"):
            reopened.maintain(max_events=0)


def test_sqlite_ledger_makes_new_files_with_32_kib_pages_and_keeps_others_as_they_are(tmp_path: Path) -> None:
    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as db:
            size = int(db.execute("PRAGMA page_size").fetchone()[0])
        db.close()
        return size

    with SQLiteLedger(tmp_path / "new.db") as ledger:
        ledger.write(awkward_events(10))
    assert page_size(tmp_path / "new.db") == 32768
    # A file the event log made first (sharing it) keeps SQLite's default, and works the same.
    log = SQLiteEventLog(tmp_path / "shared.db")
    log.append([b"payload"])
    with SQLiteLedger(tmp_path / "shared.db") as ledger:
        assert ledger.write(awkward_events(10)).inserted == 10
    log.close()
    assert page_size(tmp_path / "shared.db") == 4096


def test_sqlite_ledger_stores_absent_values_as_null_and_payloads_as_blobs(tmp_path: Path) -> None:
    # The write path binds '' for an absent optional text (sqlite3 binds None slowly); what lands
    # in the file, for anyone reading it with SQL, is still NULL, and the payload a BLOB.
    events = awkward_events(14)
    bare = event(time=events[0].time, tenant_id="acme", priced=False, price_version=None)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write([*events, bare])
        entries = ledger.entries(events[0].time, events[-1].time + timedelta(days=1))
        read = {entry.event.event_id: entry.event for entry in entries}
        assert read == {e.event_id: e for e in [*events, bare]}
    with sqlite3.connect(tmp_path / "l.db") as db:
        rows = db.execute(
            "SELECT event_id, typeof(run_id), priced, typeof(cost), typeof(unpriced_reason),"
            " typeof(price_version), typeof(payload) FROM ledger_events"
        ).fetchall()
    db.close()
    kinds = {event_id: kind for event_id, *kind in rows}
    unpriced = events[0]  # every seventh awkward event is unpriced
    assert kinds[unpriced.event_id] == ["text", 0, "null", "text", "text", "blob"]
    assert kinds[events[1].event_id] == ["text", 1, "text", "null", "text", "blob"]
    assert kinds[bare.event_id] == ["null", 0, "null", "text", "null", "blob"]


def test_sqlite_ledger_can_share_a_file_with_the_event_log(tmp_path: Path) -> None:
    path = tmp_path / "outlay.db"
    log = SQLiteEventLog(path)
    ledger = SQLiteLedger(path)
    try:
        log.append([b"payload"])
        assert ledger.write(awkward_events(10)).inserted == 10
        assert log.end_offset() == 1
        assert ledger.event_count() == 10
    finally:
        ledger.close()
        log.close()


def test_sqlite_ledger_refuses_memory_paths() -> None:
    with pytest.raises(InvalidInput, match="InMemoryLedger"):
        SQLiteLedger(":memory:")


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:{tmp_path}/b.db", str(tmp_path / "c.db")):
        with open_ledger(url) as ledger:
            assert isinstance(ledger, SQLiteLedger)
    with open_ledger(str(tmp_path)) as in_dir:
        assert isinstance(in_dir, SQLiteLedger)
        assert in_dir.path == tmp_path / "outlay.db"
    assert isinstance(open_ledger("memory://"), InMemoryLedger)
    monkeypatch.setenv("OUTLAY_URL", str(tmp_path / "env.db"))
    with open_ledger() as from_env:
        assert isinstance(from_env, SQLiteLedger)
        assert from_env.path == tmp_path / "env.db"
    monkeypatch.setenv("OUTLAY_LEDGER_URL", f"sqlite://{tmp_path}/ledger-only.db")  # wins, as in Outlay
    with open_ledger() as from_ledger_env:
        assert isinstance(from_ledger_env, SQLiteLedger)
        assert from_ledger_env.path == tmp_path / "ledger-only.db"
    with pytest.raises(ConfigError, match="no ledger at"):
        open_ledger(str(tmp_path / "missing.db"), create=False)
    with pytest.raises(ConfigError, match="unsupported ledger URL"):
        open_ledger("redis://localhost")


def test_sqlite_write_pauses_the_cyclic_gc_and_gives_it_back_as_it_was(tmp_path: Path) -> None:
    # Building a batch's rows triggers no collection (they are acyclic), and the caller's setting
    # survives a write that succeeds, one that is refused, and one made with the GC already off.
    seen: list[bool] = []

    class Watching(SQLiteLedger):
        def _write(self, events, payloads):  # type: ignore[no-untyped-def]
            seen.append(gc.isenabled())
            return super()._write(events, payloads)

    with Watching(tmp_path / "l.db") as ledger:
        assert gc.isenabled()
        ledger.write(awkward_events(20))
        assert gc.isenabled()
        with pytest.raises(InvalidInput):
            ledger.write(["not an event"])  # type: ignore[list-item]
        assert gc.isenabled()
        gc.disable()
        try:
            ledger.write(awkward_events(5))
            assert not gc.isenabled()
        finally:
            gc.enable()
    assert seen == [False, False, False]


@pytest.mark.parametrize(
    "url", ["postgresql:/outlay@db:5432/outlay", "postgres:db/outlay", "postgresql//outlay@db/outlay"]
)
def test_a_mistyped_postgresql_url_is_refused_not_made_a_sqlite_ledger(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OUTLAY_LEDGER_URL=postgresql:/... (one slash) used to open a new SQLite ledger in a directory
    # named after the URL: a worker then wrote the shared stream's events where no report looks.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="neither a URL") as info:
        open_ledger(url)
    assert info.value.field == "ledger"
    assert list(tmp_path.iterdir()) == []


def test_a_threads_sqlite_connection_is_closed_when_the_thread_ends(tmp_path: Path) -> None:
    """Each thread that used the ledger kept its connection (file handles, up to 64 MiB of page
    cache) until close(): a program whose threads come and go ran out of either."""
    import os
    import threading
    import time

    ledger = SQLiteLedger(tmp_path / "ledger.db", checkpoint_interval=None)  # no thread of its own
    ledger.write(awkward_events(5))

    def read() -> None:
        assert ledger.event_count() == 5

    def handles() -> int:
        return len(os.listdir("/proc/self/fd"))

    def wave() -> int:
        threads = [threading.Thread(target=read) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 5  # a joined thread's locals go a moment after join returns
        while len(ledger._connections) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return handles()

    read()
    first = wave()
    last = [wave() for _ in range(4)][-1]
    assert len(ledger._connections) == 1  # this thread's own, not one per thread that ever read
    # SQLite keeps a closed connection's descriptors while others hold locks on the file, and
    # opens new ones from them: bounded by the threads at once (20), not by the threads there
    # were (~240 more descriptors after these four waves)
    assert last <= first + 30
    read()  # the ledger still works, here and in a new thread
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    ledger.close()


def _indexed_to(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM ledger_meta WHERE name = 'tenants_indexed_to'").fetchone()
    db.close()
    return 0 if row is None else int(row[0])


def _tenant_reads(ledger: SQLiteLedger | InMemoryLedger, low: datetime, high: datetime) -> list[object]:
    """What a tenant sees, for each tenant and the unattributed: its entries in order (all, and
    chat operations only), and its totals over a window given to the second."""
    out: list[object] = []
    for tenant in ("acme", "globex", "initech", "umbrella", "nobody"):
        out.append([(e.event.event_id, e.cost) for e in ledger.entries(low, high, tenant=tenant)])
        chats = ledger.entries(low, high, tenant=tenant, operation_prefix="chat")
        out.append([e.event.event_id for e in chats])
        out.append(by_key(ledger.event_totals(["tenant", "model"], low, high, tenant=tenant)))
    out.append(by_key(ledger.event_totals(["model", "day"], low, high, unattributed=True)))
    return out


def test_sqlite_ledger_tenant_reads_are_exact_before_during_and_after_the_tenant_index_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tenant's events are read from ledger_tenant_index up to its watermark and from the events
    # past it, in one statement; entries page across that boundary (pages of 7 here). Whatever
    # part is indexed, every tenant reads exactly what a ledger with no such split reads.
    monkeypatch.setattr("outlay.ledger._sqlite._PAGE", 7)
    path = tmp_path / "l.db"
    events = [
        dataclasses.replace(e, operation="embedding") if i % 4 == 0 else e
        for i, e in enumerate(awkward_events(700, step=timedelta(minutes=5)))
    ]
    low, high = events[3].time + timedelta(seconds=1), events[-3].time + timedelta(minutes=1)
    reference = InMemoryLedger()
    reference.write(events)
    expected = _tenant_reads(reference, low, high)
    assert expected[0] and expected[-1]  # tenants with entries, unattributed spend
    with SQLiteLedger(path) as ledger:
        ledger.write(events[:400])
        ledger.write(events[400:])  # nothing indexed yet
        assert _indexed_to(path) == 0
        assert _tenant_reads(ledger, low, high) == expected
        assert ledger.maintain(max_events=23) is True  # indexes 230 (ten times the hour step)
        assert _indexed_to(path) == 230
        assert _tenant_reads(ledger, low, high) == expected
        while ledger.maintain(max_events=23):
            pass
        assert _indexed_to(path) == 700
        assert _tenant_reads(ledger, low, high) == expected
        ledger.write(events[650:])  # duplicates: nothing new to index
        assert ledger.maintain() is False
        # Re-rated events read at their new cost from either part.
        repriced = Rating(cost=Decimal("0.5"), priced=True, price_version="v2")
        ratings = [(e.event_id, repriced) for e in events[::9]]
        ledger.append_adjustments(ratings)
        reference.append_adjustments(ratings)
        assert _tenant_reads(ledger, low, high) == _tenant_reads(reference, low, high)


def test_sqlite_ledger_write_fills_the_tenant_index_when_too_many_events_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without idle upkeep (a writer that never runs out of work, or a program writing directly),
    # a tenant's read would scan ever more unindexed events: write fills the index past the bound.
    monkeypatch.setattr("outlay.ledger._sqlite.TENANT_TAIL", 50)
    path = tmp_path / "l.db"
    events = awkward_events(130)
    with SQLiteLedger(path) as ledger:
        ledger.write(events[:30])
        ledger.write(events[30:50])
        assert _indexed_to(path) == 0  # 50 waiting: within the bound
        ledger.write(events[40:80])  # 10 duplicates, 30 new: 80 waiting
        assert _indexed_to(path) == 80
        ledger.write(events[80:130])
        assert _indexed_to(path) == 80
        with sqlite3.connect(path) as db:
            indexed = db.execute("SELECT COUNT(*), MAX(seq) FROM ledger_tenant_index").fetchone()
        db.close()
        assert indexed == (80, 80)
        reference = InMemoryLedger()
        reference.write(events)
        low, high = events[0].time, events[-1].time + timedelta(seconds=1)
        assert _tenant_reads(ledger, low, high) == _tenant_reads(reference, low, high)


def test_sqlite_ledger_with_the_old_tenant_index_moves_it_once_and_reads_the_same(tmp_path: Path) -> None:
    # Ledgers made before the tenant index was filled in bulk had an index SQLite kept up per
    # insert. The first open moves its entries and drops it; an older outlay that re-creates it
    # (and writes meanwhile) is moved again at the next open, nothing read twice or missed.
    path = tmp_path / "old.db"
    events = awkward_events(300, step=timedelta(minutes=13))
    low, high = events[1].time, events[-1].time + timedelta(seconds=1)
    reference = InMemoryLedger()
    reference.write(events)

    def as_before_2026_12_07(db: sqlite3.Connection) -> None:
        db.execute("CREATE INDEX ledger_events_tenant_time ON ledger_events (tenant, time_us)")

    def indexes(db_path: Path) -> set[str]:
        with sqlite3.connect(db_path) as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        db.close()
        return names

    with SQLiteLedger(path) as ledger:
        ledger.write(events[:200])
    with sqlite3.connect(path) as db:  # the old layout: the index, no table, no watermark
        db.execute("DROP TABLE ledger_tenant_index")
        db.execute("DELETE FROM ledger_meta")
        as_before_2026_12_07(db)
    db.close()
    with SQLiteLedger(path) as reopened:
        assert "ledger_events_tenant_time" not in indexes(path)
        assert _indexed_to(path) == 200
        reopened.write(events[200:250])
    with sqlite3.connect(path) as db:  # an older outlay opens it: the index is back
        as_before_2026_12_07(db)
    db.close()
    with SQLiteLedger(path) as reopened:
        assert "ledger_events_tenant_time" not in indexes(path)
        assert _indexed_to(path) == 250
        reopened.write(events[250:])
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM ledger_tenant_index").fetchone()[0] == 250
        db.close()
        assert _tenant_reads(reopened, low, high) == _tenant_reads(reference, low, high)


def test_sqlite_ledger_reads_one_tenant_without_reading_the_others(tmp_path: Path) -> None:
    # A tenant's page must cost what that tenant's events cost, not the whole window's: the work
    # SQLite does (virtual machine steps) for one small tenant stays a small part of a read of all.
    from outlay.ledger import SQLiteLedger as Ledger

    events = awkward_events(4000, step=timedelta(seconds=30))
    small = [
        event(time=events[i * 100].time + timedelta(seconds=1), tenant_id="tiny", feature="search")
        for i in range(20)
    ]
    low, high = events[0].time, events[-1].time + timedelta(seconds=1)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.write([*events, *small])
        while ledger.maintain():
            pass
        ledger.write(events[:10])  # a duplicate batch: nothing waits past the index
        everyone = _sqlite_steps(ledger, lambda: list(ledger.entries(low, high)))
        tiny = _sqlite_steps(ledger, lambda: list(ledger.entries(low, high, tenant="tiny")))
        assert len(list(ledger.entries(low, high, tenant="tiny"))) == 20
        assert tiny * 20 < everyone
        all_totals = _sqlite_steps(ledger, lambda: ledger.event_totals(["tenant", "reason"], low, high))
        tiny_totals = _sqlite_steps(
            ledger, lambda: ledger.event_totals(["tenant", "reason"], low, high, tenant="tiny")
        )
        assert tiny_totals * 20 < all_totals


def _sqlite_steps(ledger: SQLiteLedger, read: Callable[[], object]) -> int:
    """The work SQLite does for ``read`` on this thread's connection, in hundreds of VM steps."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    connection = ledger._connection()
    connection.set_progress_handler(tick, 100)
    try:
        read()
    finally:
        connection.set_progress_handler(None, 100)
    return count[0]


def test_sqlite_ledger_pages_a_big_tenant_without_rescanning_the_unindexed_events_per_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big tenant's export reads many pages. The events past the tenant index (up to TENANT_TAIL
    # of them when the writer has had no idle time) must be scanned once for the whole read, not
    # once per page: that made one tenant's entries cost more than everyone's.
    monkeypatch.setattr("outlay.ledger._sqlite._PAGE", 50)
    events = [
        dataclasses.replace(e, tenant_id="whale") if i % 2 == 0 and e.tenant_id else e
        for i, e in enumerate(awkward_events(3000, step=timedelta(minutes=1)))
    ]
    low, high = events[0].time, events[-1].time + timedelta(seconds=1)
    reference = InMemoryLedger()
    reference.write(events)
    expected = [e.event.event_id for e in reference.entries(low, high, tenant="whale")]
    assert len(expected) > 1300  # 27 pages and more
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write(events)
        assert _indexed_to(tmp_path / "l.db") == 0  # every event waits past the index
        got: list[str] = []
        waiting = _sqlite_steps(
            ledger, lambda: got.extend(e.event.event_id for e in ledger.entries(low, high, tenant="whale"))
        )
        assert got == expected
        everyone = _sqlite_steps(ledger, lambda: list(ledger.entries(low, high)))
        while ledger.maintain():
            pass
        indexed = _sqlite_steps(ledger, lambda: list(ledger.entries(low, high, tenant="whale")))
        assert waiting < 3 * indexed  # was 15 times as much
        assert waiting < everyone + indexed  # was 7 times everyone's


def test_sqlite_ledger_tenant_entries_stay_exact_while_the_index_fills_and_events_arrive_between_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An export reads page by page with no transaction held: between its pages the writer adds
    # events (some filling the tenant index itself) and its idle upkeep fills the index. Each
    # event is read once, in order; those added later into the unread part of the window too.
    monkeypatch.setattr("outlay.ledger._sqlite._PAGE", 7)
    monkeypatch.setattr("outlay.ledger._sqlite.TENANT_TAIL", 40)
    events = awkward_events(600, step=timedelta(minutes=5))
    low, high = events[0].time, events[399].time + timedelta(seconds=1)
    late = [  # written during the read: in the window's last second, or past it
        dataclasses.replace(e, time=high - timedelta(microseconds=1 + i % 2 * 500_000)) if i % 3 == 0 else e
        for i, e in enumerate(events[400:])
    ]
    reference = InMemoryLedger()
    reference.write(events[:400])
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write(events[:150])
        ledger.maintain(max_events=5)  # 50 indexed
        ledger.write(events[150:400])  # 250 waiting: write fills the index
        ledger.write(events[100:130])  # duplicates
        for tenant, arrivals in (("acme", late[:100]), ("globex", late[100:])):
            reference.write(arrivals)
            expected = [e.event.event_id for e in reference.entries(low, high, tenant=tenant)]
            got: list[str] = []
            for count, entry in enumerate(ledger.entries(low, high, tenant=tenant, operation_prefix="")):
                got.append(entry.event.event_id)
                if count % 7 == 6:  # between pages
                    at = count // 7 * 20
                    ledger.write(arrivals[at : at + 20])
                    ledger.maintain(max_events=1 + count % 4)
            assert got == expected
            assert len(got) == len(set(got))


@contextlib.contextmanager
def _read_only_file(path: Path) -> Iterator[None]:
    """``path`` read-only for this process, the directory beside it still writable (SQLite makes
    its -shm file there): by its mode, or when running as root (whom modes do not stop) by the
    immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if (
        chattr is None
        or subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode
    ):
        pytest.skip("running as root where files cannot be made immutable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_ledger_from_before_the_bulk_tenant_index_still_reads(tmp_path: Path) -> None:
    # An archived ledger (a read-only file, a snapshot on a read-only volume) made before the
    # tenant index was filled in bulk: the previous release read it; the table and the move of its
    # old index cannot be written, so it is read from the events, exactly, instead of refused.
    path = tmp_path / "archive.db"
    events = awkward_events(300, step=timedelta(minutes=13))
    low, high = events[1].time, events[-1].time + timedelta(seconds=1)
    reference = InMemoryLedger()
    reference.write(events)
    with SQLiteLedger(path) as ledger:
        ledger.write(events)
        while ledger.maintain():
            pass
    with contextlib.closing(sqlite3.connect(path)) as db:  # the old layout, all in the main file
        db.execute("DROP TABLE ledger_tenant_index")
        db.execute("DELETE FROM ledger_meta WHERE name = 'tenants_indexed_to'")
        db.execute("CREATE INDEX ledger_events_tenant_time ON ledger_events (tenant, time_us)")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with _read_only_file(path):
        with SQLiteLedger(path) as archived:
            assert _tenant_reads(archived, low, high) == _tenant_reads(reference, low, high)
            assert by_key(archived.rollup_totals(["tenant"], DAY0, DAY_END)) == by_key(
                reference.rollup_totals(["tenant"], DAY0, DAY_END)
            )
            assert archived.maintain() is False  # nothing it could do
            with pytest.raises(BackendError, match="readonly"):
                archived.write([event(time=events[0].time, tenant_id="acme")])
