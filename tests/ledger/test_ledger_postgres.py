"""The PostgreSQL ledger on the machine's real PostgreSQL: conformance, schema, failures, reports.

Each ledger gets its own throwaway schema, dropped afterwards. Without PostgreSQL these tests skip,
or fail under ``OUTLAY_REQUIRE_SERVICES=1`` (the ``postgres_url`` fixture).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay._rating import Rating
from outlay.events import encode_event
from outlay.ledger import (
    GROUP_KEYS,
    InMemoryLedger,
    LedgerStore,
    LedgerWriter,
    _postgres_schema,
    _postgres_session,
    open_ledger,
)
from outlay.ledger._postgres import PostgresLedger
from outlay.reporting import Reports
from outlay.stream import InMemoryEventLog

from ._pg_proxy import Proxy
from .conformance import DAY0, DAY_END, LedgerStoreConformance, by_key, recompute
from .conftest import T0, D, awkward_events, event, unpriced

Factory = Callable[..., PostgresLedger]


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def _admin(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _terminate(url: str, ledger: PostgresLedger, *, waiting: bool = False) -> int:
    """Kill the backends of ``ledger``'s connections from another connection; returns how many."""
    condition = " AND wait_event_type = 'Lock'" if waiting else ""
    rows = _admin(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE application_name = %s AND pid <> pg_backend_pid(){condition}",
        (ledger.application_name,),
    )
    return sum(1 for (done,) in rows if done)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Factory]:
    """Makes ledgers in fresh schemas; drops them all at the end."""
    made: list[PostgresLedger] = []

    def factory(**kwargs: Any) -> PostgresLedger:
        ledger = PostgresLedger(
            kwargs.pop("url", postgres_url), schema=kwargs.pop("schema", _schema()), **kwargs
        )
        made.append(ledger)
        return ledger

    yield factory
    for ledger in made:
        ledger.close()
    for schema in {ledger.schema for ledger in made}:
        _admin(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def make_ledger(pg: Factory) -> Callable[[], LedgerStore]:
    # Hypothesis calls this once per example: a ledger of an earlier example is never used again,
    # so its connection is closed rather than kept (PostgreSQL's connection slots are shared).
    previous: list[PostgresLedger] = []

    def factory() -> LedgerStore:
        for ledger in previous:
            ledger.close()
        previous[:] = [pg()]
        return previous[0]

    return factory


@pytest.fixture
def ledger(pg: Factory) -> PostgresLedger:
    return pg()


class TestPostgresConformance(LedgerStoreConformance):
    """The conformance suite every ledger passes, on PostgreSQL."""


# --- schema, partitions, money ---------------------------------------------------------------------


def test_events_go_to_monthly_partitions_created_on_demand(ledger: PostgresLedger, postgres_url: str) -> None:
    months = [datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)]
    months.append(datetime(2027, 12, 15, tzinfo=UTC))  # across a year boundary, far from the others
    ledger.write([event(time=moment, cost=D("1")) for moment in months])
    rows = _admin(
        postgres_url,
        "SELECT c.relname, count(*) FILTER (WHERE true) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE p.relname = 'events' AND n.nspname = %s GROUP BY 1 ORDER BY 1",
        (ledger.schema,),
    )
    assert [name for name, _ in rows] == ["events_2026_01", "events_2026_02", "events_2027_12"]
    for name, moment in zip(["events_2026_01", "events_2026_02", "events_2027_12"], months, strict=True):
        count = _admin(postgres_url, f'SELECT count(*), min(time) FROM "{ledger.schema}".{name}')
        assert count == [(1, moment)]  # each event in its own month, boundaries exact in UTC


def test_separate_ledgers_creating_the_same_partitions_at_once(pg: Factory) -> None:
    schema = _schema()
    ledgers = [pg(schema=schema) for _ in range(6)]  # separate caches: each thinks it must create
    barrier = threading.Barrier(len(ledgers))
    errors: list[BaseException] = []

    def write(index: int, ledger: PostgresLedger) -> None:
        events = [event(time=datetime(2026, m, 3, tzinfo=UTC), cost=D(index)) for m in range(1, 13)]
        barrier.wait()
        try:
            ledger.write(events)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=pair) for pair in enumerate(ledgers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledgers[0].event_count() == 72
    assert ledgers[0].rollup_totals([], DAY0, DAY_END)[0].cost == D(12 * sum(range(6)))


def test_a_new_event_in_a_detached_month_gets_a_new_partition(pg: Factory, postgres_url: str) -> None:
    # docs/postgres.md: "to drop old detail, detach or drop a month's partition". After a detach,
    # CREATE TABLE IF NOT EXISTS found the detached table by name and created nothing: every write
    # of a new event into that month failed, and the writer retried that batch forever.
    ledger = pg()
    old = datetime(2025, 1, 10, tzinfo=UTC)
    ledger.write([event(time=old, cost=D("1"))])
    schema = ledger.schema
    _admin(postgres_url, f'ALTER TABLE "{schema}".events DETACH PARTITION "{schema}".events_2025_01')
    assert ledger.write([event(time=old + timedelta(days=1), cost=D("2"))]).inserted == 1
    other = pg(schema=schema)  # another process, knowing no partition yet
    assert other.write([event(time=old + timedelta(days=2), cost=D("4"))]).inserted == 1
    log = InMemoryEventLog()
    log.append([encode_event(event(time=old + timedelta(days=3), cost=D("8")))])
    assert LedgerWriter(log, pg(schema=schema)).catch_up().inserted == 1
    assert [e.cost for e in ledger.entries(old, old + timedelta(days=30))] == [D("2"), D("4"), D("8")]
    assert _admin(postgres_url, f'SELECT count(*) FROM "{schema}".events_2025_01') == [(1,)]  # kept as is
    assert ledger.rollup_totals([], date(2025, 1, 1), date(2025, 2, 1))[0].cost == D("15")


def test_money_is_stored_as_exact_numeric(ledger: PostgresLedger, postgres_url: str) -> None:
    cost = D("0.000000123456789012345678") * 49_999
    ledger.write([event(cost=cost)])
    rows = _admin(
        postgres_url,
        "SELECT table_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND column_name IN ('cost', 'delta', 'previous_cost')"
        " AND table_name NOT LIKE 'events\\_2%%' ORDER BY 1",
        (ledger.schema,),
    )
    assert {data_type for _, data_type in rows} == {"numeric"}
    assert {name for name, _ in rows} >= {"events", "rollups", "rollups_month", "runs", "adjustments"}
    stored = _admin(postgres_url, f'SELECT cost::text FROM "{ledger.schema}".events')
    assert D(stored[0][0]) == cost
    total = ledger.rollup_totals([], DAY0, DAY_END)[0].cost
    assert isinstance(total, D) and total == cost


def test_migrations_apply_once_when_workers_start_together(
    pg: Factory, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = _schema()
    # A second migration that fails if run twice (ADD COLUMN without IF NOT EXISTS).
    migrations = [
        *_postgres_schema.MIGRATIONS,
        (
            len(_postgres_schema.MIGRATIONS) + 1,
            "rejects note",
            "ALTER TABLE {s}.rejects ADD COLUMN note text",
        ),
    ]
    monkeypatch.setattr(_postgres_session, "MIGRATIONS", migrations)
    barrier = threading.Barrier(8)
    made: list[PostgresLedger] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            made.append(pg(schema=schema))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(made) == 8
    versions = _admin(postgres_url, f'SELECT version, name FROM "{schema}".schema_migrations ORDER BY 1')
    assert versions == [(version, name) for version, name, _ in migrations]
    made[0].write([event()])
    assert made[-1].event_count() == 1  # every worker sees the one ledger


def test_events_at_one_instant_keep_their_recording_order_across_connections(pg: Factory) -> None:
    """Two writers (two connections) recording at one instant: the entries, and so the pages of
    ``/events``, list the events in the order they were recorded, as the SQLite ledger does; a later
    event listed before one already paged past would never be seen by the client paging."""
    schema = _schema()
    first, second = pg(schema=schema), pg(schema=schema)
    recorded = [event(time=T0, feature=name) for name in ("one", "two", "three", "four")]
    for index, e in enumerate(recorded):
        (first if index % 2 == 0 else second).write([e])
    listed = [entry.event.feature for entry in first.entries(T0, T0 + timedelta(seconds=1))]
    assert listed == ["one", "two", "three", "four"]


def test_a_newer_database_schema_is_refused(pg: Factory, postgres_url: str) -> None:
    ledger = pg()
    ledger.close()
    _admin(
        postgres_url, f"INSERT INTO \"{ledger.schema}\".schema_migrations (version, name) VALUES (99, 'x')"
    )
    with pytest.raises(BackendError, match="version 99, newer"):
        pg(schema=ledger.schema)


def test_bad_configuration_is_named(postgres_url: str) -> None:
    with pytest.raises(InvalidInput, match="schema"):
        PostgresLedger(postgres_url, schema='x"; DROP TABLE y; --')
    with pytest.raises(ConfigError, match="url"):
        PostgresLedger("mysql://localhost/test")
    with pytest.raises(ConfigError, match="URL names 'b'"):
        PostgresLedger(postgres_url + "?schema=b", schema="a")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:secret@127.0.0.1:1/test",
        "postgresql://postgres@127.0.0.1:1/test?password=secret",
    ],
)
def test_unreachable_server_is_backend_unavailable(url: str) -> None:
    with pytest.raises(BackendUnavailable, match="cannot connect") as caught:
        PostgresLedger(url, connect_timeout=1)
    assert "secret" not in str(caught.value)  # the password never reaches logs, wherever the URL holds it
    assert "***" in str(caught.value)


def test_a_password_in_the_url_query_is_masked_too() -> None:
    # libpq reads ?password= as well as user:password@; that one was printed in full.
    for url in (
        "postgresql://postgres@127.0.0.1:1/test?password=s3cret&schema=x",
        "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1&pass%77ord=s3cret",
    ):
        with pytest.raises(BackendUnavailable, match="cannot connect") as caught:
            PostgresLedger(url, connect_timeout=1)
        assert "s3cret" not in str(caught.value)
        assert "=***" in str(caught.value)


def test_open_ledger_selects_postgres_with_schema_in_url(pg: Factory, postgres_url: str) -> None:
    schema = _schema()
    pg(schema=schema).close()  # registered for the drop at the end
    with open_ledger(f"{postgres_url}?schema={schema}") as ledger:
        assert isinstance(ledger, PostgresLedger)
        assert ledger.schema == schema
        ledger.write([event()])
        assert ledger.event_count() == 1


def test_a_report_on_a_mistyped_schema_is_an_error_and_creates_nothing(
    pg: Factory, postgres_url: str
) -> None:
    """As for a mistyped SQLite path: ``outlay report --ledger postgresql://...?schema=typo`` said
    "no events in this window" and left a new, empty schema ``typo`` in the database."""
    from click.testing import CliRunner

    from outlay.cli import main

    schema = _schema()
    pg(schema=schema).write([event(tenant_id="acme")])  # the real one, dropped at the end
    window = ["--from", "2026-03-01", "--to", "2026-04-01", "--format", "json", "--ledger"]
    typo = f"{schema}x"
    try:
        result = CliRunner().invoke(main, ["report", "tenants", *window, f"{postgres_url}?schema={typo}"])
        assert result.exit_code == 2, result.output
        assert "no ledger in PostgreSQL ledger" in result.output and typo in result.output
        assert _admin(postgres_url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (typo,)) == []
    finally:
        _admin(postgres_url, f'DROP SCHEMA IF EXISTS "{typo}" CASCADE')
    result = CliRunner().invoke(main, ["report", "tenants", *window, f"{postgres_url}?schema={schema}"])
    assert result.exit_code == 0, result.output
    assert [row["tenant"] for row in json.loads(result.stdout)] == ["acme"]
    with open_ledger(f"{postgres_url}?schema={typo}x") as created:  # recording still creates its schema
        assert created.event_count() == 0
    _admin(postgres_url, f'DROP SCHEMA IF EXISTS "{typo}x" CASCADE')


def test_url_parameters_beside_schema_reach_libpq_unchanged(pg: Factory, postgres_url: str) -> None:
    # Taking ?schema= out of the URL re-encoded the other parameters with "+" for a space, which
    # libpq reads as a plus: options=-c%20statement_timeout... became "-c+statement_timeout..."
    # and the server refused the connection ("unrecognized configuration parameter").
    schema = _schema()
    pg(schema=schema).close()  # registered for the drop at the end
    url = f"{postgres_url}?options=-c%20statement_timeout%3D4321&schema={schema}&keepalives=1"
    with open_ledger(url) as ledger:
        assert isinstance(ledger, PostgresLedger)
        assert ledger.schema == schema
        assert "schema" not in ledger.url and "options=-c%20statement_timeout%3D4321" in ledger.url
        shown = ledger._session.run(lambda c: c.execute("SHOW statement_timeout").fetchone())
        assert shown == ("4321ms",)
        ledger.write([event()])
        assert ledger.event_count() == 1


def test_times_come_back_in_utc_whatever_the_session_time_zone(pg: Factory, postgres_url: str) -> None:
    # A TimeZone set in the URL (or on the server) made adjustments() and rejected() return times
    # in that zone where the other ledgers return UTC; days and months stay UTC either way.
    ledger = pg(url=f"{postgres_url}?options=-c%20TimeZone%3DPacific/Auckland")
    at = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)  # already 1 April in Auckland
    ledger.write([event(time=at, cost=D("1"))])
    (only,) = list(ledger.entries(at, at + timedelta(seconds=1)))
    ledger.append_adjustments([(only.event.event_id, Rating(D("2"), True, "v2"))], at=at)
    ledger.reject(b"{", "bad json")
    assert ledger.adjustments()[0].time.utcoffset() == timedelta(0)
    assert ledger.adjustments()[0].time == at
    assert ledger.rejected()[0].time.utcoffset() == timedelta(0)
    assert [(t.key, t.cost) for t in ledger.rollup_totals(["day"], DAY0, date(2026, 5, 1))] == [
        (("2026-03-31",), D("2"))
    ]


def test_closed_ledger_refuses_work(ledger: PostgresLedger) -> None:
    ledger.close()
    with pytest.raises(BackendError, match="closed"):
        ledger.write([event()])


def test_a_connection_opened_while_the_ledger_closes_is_closed_too(
    ledger: PostgresLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread that was connecting when close() ran must not leave an open connection behind
    # (garbage-collected open, it warns: a failure under this suite's warnings-as-errors).
    connecting, release = threading.Event(), threading.Event()
    made: list[psycopg.Connection[Any]] = []
    real_connect = psycopg.connect

    def slow_connect(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        connection = real_connect(*args, **kwargs)
        made.append(connection)
        connecting.set()
        release.wait(10)
        return connection

    monkeypatch.setattr(_postgres_session.psycopg, "connect", slow_connect)
    failures: list[BaseException] = []

    def count() -> None:  # a new thread: it needs a connection of its own
        try:
            ledger.event_count()
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)

    thread = threading.Thread(target=count)
    thread.start()
    assert connecting.wait(10)
    ledger.close()
    release.set()
    thread.join(10)
    assert len(made) == 1 and made[0].closed
    assert len(failures) == 1 and isinstance(failures[0], BackendError)
    assert "closed" in str(failures[0])


# --- lost connections ------------------------------------------------------------------------------


def test_connection_killed_between_batches_reconnects(ledger: PostgresLedger, postgres_url: str) -> None:
    events = awkward_events(300)
    assert ledger.write(events[:100]).inserted == 100
    assert _terminate(postgres_url, ledger) == 1
    assert ledger.write(events[100:200]).inserted == 100  # on a fresh connection, transparently
    assert _terminate(postgres_url, ledger) == 1
    assert ledger.event_count() == 200  # reads reconnect too
    ledger.write(events)  # the log redelivers everything: only the last 100 are new
    assert ledger.event_count() == 300
    assert by_key(ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END)) == recompute(
        events, list(GROUP_KEYS)
    )


def test_connection_killed_mid_transaction_loses_and_doubles_nothing(
    ledger: PostgresLedger, postgres_url: str
) -> None:
    first, second = awkward_events(100), awkward_events(100, start=T0 + timedelta(hours=1))
    ledger.write(first)
    # Hold every rollup row, so the next write stops inside its transaction, after it has copied
    # its rows and claimed its event ids; then kill its backend there.
    with psycopg.connect(postgres_url) as locker:
        locker.execute(f'SELECT * FROM "{ledger.schema}".rollups FOR UPDATE').fetchall()
        results: list[Any] = []
        writer = threading.Thread(target=lambda: results.append(ledger.write(second)))
        writer.start()
        deadline = time.monotonic() + 30
        while not _terminate(postgres_url, ledger, waiting=True):
            assert time.monotonic() < deadline, "the write never waited on the locked rollups"
            time.sleep(0.02)
        locker.rollback()
    writer.join(30)
    assert [(r.inserted, r.duplicates) for r in results] == [(100, 0)]  # retried whole, nothing half-kept
    assert ledger.event_count() == 200
    both = first + second
    assert by_key(ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END)) == recompute(both, list(GROUP_KEYS))
    assert by_key(ledger.event_totals(["tenant"], T0 - timedelta(1), T0 + timedelta(30))) == recompute(
        both, ["tenant"]
    )


def test_writer_catches_up_after_postgres_goes_away(
    pg: Factory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL "restarted" (a proxy in front of it cut, then restored) while the writer runs."""
    parts = urlsplit(postgres_url)
    host_port = (parts.hostname or "127.0.0.1", parts.port or 5432)
    events = awkward_events(3000, step=timedelta(seconds=41))
    log = InMemoryEventLog()
    with Proxy(host_port) as proxy:
        ledger = pg(url=proxy.url(), connect_timeout=1)
        writer = LedgerWriter(log, ledger, batch_size=200)
        stop = threading.Event()
        thread = threading.Thread(target=writer.run_forever, args=(stop,), kwargs={"poll": 0.05})
        thread.start()
        try:
            for round_ in range(6):
                down = round_ % 2 == 1
                if down:
                    proxy.cut()  # open connections reset, new ones refused
                log.append([encode_event(e) for e in events[round_ * 500 : (round_ + 1) * 500]])
                if down:
                    time.sleep(0.5)  # the writer fails to write this chunk and backs off
                    proxy.restore()
            deadline = time.monotonic() + 60
            while log.committed("ledger") < log.end_offset():
                assert time.monotonic() < deadline, "the writer did not catch up"
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(30)
        assert any("backend failed" in r.getMessage() for r in caplog.records)  # the outages were real
        assert writer.stats.inserted == 3000
        assert ledger.event_count() == 3000
        expected = recompute(events, ["tenant", "day"])
        assert by_key(ledger.rollup_totals(["tenant", "day"], DAY0, DAY_END)) == expected


# --- reports -----------------------------------------------------------------------------------------


def test_every_report_matches_the_in_memory_ledger(ledger: PostgresLedger) -> None:
    events = awkward_events(700, start=datetime(2026, 2, 20, tzinfo=UTC), step=timedelta(hours=2, minutes=7))
    events += [
        event(run_id="root", cost=D("1"), time=T0),
        event(run_id="child", parent_run_id="root", root_run_id="root", cost=D("2"), time=T0),
        unpriced(
            run_id="leaf", parent_run_id="child", root_run_id="root", time=T0, unpriced_reason="new model"
        ),
    ]
    reference = InMemoryLedger()
    for store in (ledger, reference):
        store.write(events)
        store.append_adjustments(
            [
                (e.event_id, Rating(cost=D("0.000000000000000003"), priced=True, price_version="v9"))
                for e in events[::9]
            ]
        )
    ours, theirs = Reports(ledger), Reports(reference)
    windows = [
        ("2026-02-01", "2026-05-01"),
        ("2026-03-02", "2026-04-01"),
        ("2026-02-21T05:17:00", "2026-03-29T23:00"),
    ]
    for start, end in windows:
        for by in ("tenant", "tenant,model", "day", "feature,agent,environment", "origin"):
            assert ours.breakdown(by, start, end) == theirs.breakdown(by, start, end)
        assert ours.tenants(start, end, environment="production") == theirs.tenants(
            start, end, environment="production"
        )
        assert ours.unattributed(start, end) == theirs.unattributed(start, end)
        assert ours.unpriced(start, end) == theirs.unpriced(start, end)
        assert ours.concentration(start, end) == theirs.concentration(start, end)
    assert ours.run_tree("root") == theirs.run_tree("root")
    assert ours.breakdown("model", *windows[0], tenant="acme") == theirs.breakdown(
        "model", *windows[0], tenant="acme"
    )
    assert [e.event for e in ledger.entries(T0, T0 + timedelta(1))] == [
        e.event for e in reference.entries(T0, T0 + timedelta(1))
    ]
    assert ledger.adjustments()[0].cost == D("0.000000000000000003")


def test_report_windows_are_one_snapshot_under_concurrent_writes(ledger: PostgresLedger) -> None:
    # "Month minus days" is read in one snapshot: while writes land, a total never goes negative
    # nor counts a half-applied batch.
    stop = threading.Event()
    batches = [
        awkward_events(50, start=datetime(2026, 3, 1, tzinfo=UTC), step=timedelta(hours=14))
        for _ in range(20)
    ]

    def keep_writing() -> None:
        for batch in batches:
            if stop.is_set():
                return
            ledger.write(batch)

    thread = threading.Thread(target=keep_writing)
    thread.start()
    seen = []
    try:
        while thread.is_alive():
            rows = ledger.rollup_totals([], date(2026, 3, 2), date(2026, 4, 1))  # March minus 1 March
            seen.append(rows[0].events if rows else 0)
    finally:
        stop.set()
        thread.join()
    per_batch = sum(1 for e in batches[0] if date(2026, 3, 2) <= e.time.date() < date(2026, 4, 1))
    assert all(count % per_batch == 0 and count >= 0 for count in seen)


def test_wait_for_writes_waits_for_a_rerating_in_progress(ledger: PostgresLedger, postgres_url: str) -> None:
    # A period close takes its cutoff, then waits here: a re-rating that stamped its adjustments
    # before the cutoff (inside its transaction, under the shared lock) is committed, and sealed.
    from outlay.ledger._postgres_write import adjusting_lock_name

    name = adjusting_lock_name(ledger._session)
    waited = threading.Event()
    with psycopg.connect(postgres_url) as rerating:  # a re-rating's open transaction
        rerating.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (name,))
        closing = threading.Thread(target=lambda: (ledger.wait_for_writes(), waited.set()))
        closing.start()
        assert not waited.wait(0.5)  # the close waits while the re-rating is committing
        rerating.commit()
    closing.join(10)
    assert waited.is_set()
    # Re-ratings do not wait for each other (the lock is shared among them).
    ledger.write([event(cost=D("0.10"))])
    (only,) = list(ledger.entries(T0 - timedelta(days=1), T0 + timedelta(days=2)))
    assert ledger.append_adjustments([(only.event.event_id, Rating(D("0.2"), True, "v2"))])


def test_events_at_one_instant_keep_their_recording_order(ledger: PostgresLedger) -> None:
    # COPY into the staging table does not keep the rows' order (rows of varied sizes): seq, the
    # tie-break of entries() and /events, came out scrambled where SQLite keeps the written order.
    at = T0 + timedelta(hours=1)
    sizes = random.Random(1)
    events = [
        event(time=at, tenant_id=f"t{i}", labels={"note": "x" * sizes.randint(10, 1500)}) for i in range(200)
    ]
    ledger.write(events)
    back = [entry.event.event_id for entry in ledger.entries(at, at + timedelta(seconds=1))]
    assert back == [e.event_id for e in events]


def test_a_threads_connection_is_closed_when_the_thread_ends(
    ledger: PostgresLedger, postgres_url: str
) -> None:
    """Each thread that used the ledger kept its connection open until close(): a program whose
    threads come and go ran PostgreSQL out of connection slots ("too many clients")."""
    import threading

    ledger.write(awkward_events(5))
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)

    def read() -> None:
        assert len(list(ledger.entries(start, end))) == 5

    for _ in range(3):
        threads = [threading.Thread(target=read) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        deadline = time.monotonic() + 5  # a backend whose client has gone exits a moment later
        while True:
            (open_now,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (ledger.application_name,),
            ).fetchone()  # type: ignore[misc]
            if open_now <= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert open_now <= 1  # this thread's own, at most: not one per thread that ever read (60)
    read()  # and the ledger still works from here
