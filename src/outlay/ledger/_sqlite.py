"""``SQLiteLedger``: the embedded ledger, one SQLite file (WAL), safe across threads and processes.

Each thread gets its own connection; writes take ``BEGIN IMMEDIATE`` so concurrent writers (threads
or processes) serialise on SQLite's write lock instead of failing, and the duplicate check runs
inside the same transaction as the inserts. ``synchronous=FULL``: a committed batch survives a power
cut, because the writer acknowledges the event log as soon as ``write`` returns.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, NamedTuple

import uuid_utils

from outlay._checkpoint import DEFAULT_INTERVAL, FALLBACK_PAGES, Checkpointer
from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay._gc import gc_paused
from outlay._money import MONEY_CONTEXT, ZERO, money_str
from outlay._rating import Rating
from outlay._sqlite import compiled_inserts as compiled_inserts_of
from outlay._sqlite import use_wal
from outlay._thread_end import at_thread_end
from outlay._usage import Usage
from outlay.events import CostEvent, decode_event, encode_event

from ._base import (
    EVENT_GROUP_KEYS,
    SEVERAL_TENANTS,
    Adjustment,
    LedgerEntry,
    LedgerStore,
    Rejected,
    RunTotals,
    Totals,
    WriteResult,
    check_entries_tenant,
    prefix_filter,
)
from ._grain import combine, plan
from ._rows import (
    US_PER_HOUR,
    Acc,
    RollupDeltas,
    RunAcc,
    check_adjustment_time,
    check_by,
    check_events,
    check_rating,
    day_of,
    hour_of,
    rollup_key,
    time_us,
    tokens_of,
    wants_adjustment,
)
from ._sqlite_schema import (
    EFFECTIVE,
    FROM_EVENTS,
    INDEX_TENANTS,
    INDEXED_TO,
    INSERT_EVENT,
    ROLL_UP_HOURS,
    ROLLED_TO,
    SCHEMA,
    SET_INDEXED_TO,
    SET_ROLLED_TO,
    SUMS,
    TENANT_TAIL,
    TOKENS,
    UPSERT_HOUR,
    UPSERT_MONTH,
    UPSERT_ROLLUP,
    UPSERT_RUN,
    DecimalSum,
    dadd,
    filters,
    register_functions,
    tenant_seqs,
    totals,
)

__all__ = ["SQLiteLedger", "compiled_inserts", "event_rows", "event_rows_py", "speedups"]

_PAGE_SIZE: Final = 32768
_CHUNK: Final = 4000  # ids per IN (...) list; well under SQLite's 32,766 variable limit
_PAGE: Final = 1000
_OLD_TENANT_INDEX: Final = (
    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'ledger_events_tenant_time'"
)

# A read-only ledger made before ledger_tenant_index: every event counts as indexed, read through
# its old index ``ledger_events_tenant_time`` as the release before did (TEMP names come first).
_READ_ONLY_TENANT_INDEX: Final = """
CREATE TEMP VIEW IF NOT EXISTS ledger_tenant_index AS SELECT tenant, time_us, seq FROM main.ledger_events;
CREATE TEMP VIEW IF NOT EXISTS ledger_meta AS
    SELECT name, value FROM main.ledger_meta WHERE name <> 'tenants_indexed_to'
    UNION ALL SELECT 'tenants_indexed_to', (SELECT COALESCE(MAX(seq), 0) FROM main.ledger_events);
"""


class _Scope(NamedTuple):
    """Which events a query keeps (see ``filters``)."""

    environment: str | None
    tenant: str | None
    unattributed: bool


def _money(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else money_str(amount)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def event_rows_py(
    events: Sequence[CostEvent], payloads: Sequence[bytes] | None, first: dict[str, int], raw: bool = False
) -> tuple[list[tuple[Any, ...]], RollupDeltas]:
    """The ``ledger_events`` rows of the events at ``first``'s indexes (one per distinct id), and
    their rollup deltas as if every one were new. Hot: it runs once per ingested event, so
    ``outlay.ledger._speedups`` does the same in C where it was built (:func:`event_rows`); this
    is the reference the tests hold it to.

    The values are of the types sqlite3 binds without its adapter lookup (see ``INSERT_EVENT``):
    '' for an absent optional text, 1/0 for ``priced``, the payload as a ``bytearray`` (with ``raw``,
    a ``bytes`` payload as it is: ``insert_rows`` binds it without the copy)."""
    rows = []
    deltas = RollupDeltas()
    add = deltas.add_event
    for event_id, index in first.items():
        event = events[index]
        us = time_us(event.time)
        key = rollup_key(event, day_of(us))
        tokens = tokens_of(event)
        add(event, key, us, tokens)
        cost = event.cost  # None exactly when the event is unpriced (a CostEvent invariant)
        rows.append(
            (
                event_id,
                us,
                key[1],
                key[0],
                *key[2:],
                event.run_id or "",
                0 if cost is None else 1,
                "" if cost is None else format(cost, "f"),
                event.unpriced_reason or "",
                event.price_version or "",
                *tokens,
                _blob(payloads[index] if payloads is not None else encode_event(event), raw),
            )
        )
    return rows, deltas


def _blob(payload: bytes, raw: bool) -> bytes | bytearray:
    return payload if raw and type(payload) is bytes else bytearray(payload)


def _load_speedups() -> Any:
    """The compiled ``event_rows`` (``None`` where it was not built, or ``OUTLAY_NO_SPEEDUPS=1``)."""
    if os.environ.get("OUTLAY_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from outlay.ledger import _speedups
    except ImportError:
        return None
    _speedups.configure(
        time_us,
        day_of,
        encode_event,
        CostEvent,
        Usage,
        Acc,
        RunAcc,
        RollupDeltas.link,
        MONEY_CONTEXT.add,
        SEVERAL_TENANTS,
    )
    return _speedups


_SPEEDUPS: Final = _load_speedups()


def speedups() -> bool:
    """Whether the SQLite ledger builds its rows with the compiled ``outlay.ledger._speedups``
    (the install compiles it where a C compiler is found; ``OUTLAY_NO_SPEEDUPS=1`` turns it off)."""
    return _SPEEDUPS is not None


def event_rows(
    events: Sequence[CostEvent], payloads: Sequence[bytes] | None, first: dict[str, int], raw: bool = False
) -> tuple[list[tuple[Any, ...]], RollupDeltas]:
    """:func:`event_rows_py`, compiled where the speedups were built (the same rows and deltas)."""
    if _SPEEDUPS is None:
        return event_rows_py(events, payloads, first, raw)
    deltas = RollupDeltas()
    rows: list[tuple[Any, ...]] = _SPEEDUPS.event_rows(events, payloads, first, deltas, raw)
    return rows, deltas


# The compiled ``insert_rows`` (outlay._sqlite.compiled_inserts), unless the speedups are off.
_INSERT_ROWS: Final = compiled_inserts_of() if _SPEEDUPS is not None else None


def compiled_inserts() -> bool:
    """Whether the ledger's inserts and upserts are stepped in C (``insert_rows``) rather than by
    ``executemany``: where the speedups were built and found this Python's SQLite library."""
    return _INSERT_ROWS is not None


def _executemany(cursor: sqlite3.Cursor, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """``cursor.executemany(sql, rows)``, compiled where it can be; the rows changed."""
    if _INSERT_ROWS is not None:
        return int(_INSERT_ROWS(cursor.connection, sql, rows))
    cursor.executemany(sql, rows)
    return cursor.rowcount


class SQLiteLedger(LedgerStore):
    """The embedded ledger at ``path`` (created, with its parent directory, if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        checkpoint_interval: float | None = DEFAULT_INTERVAL,
    ) -> None:
        text = os.fspath(path)
        if text == ":memory:" or text.startswith("file:"):
            raise InvalidInput("give a file path (use InMemoryLedger for an in-memory ledger)", field="path")
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ConfigError("checkpoint_interval must be > 0 seconds or None", field="checkpoint_interval")
        # Absolute now: another thread's connection, a writer process or the period store beside
        # it must open this file even after the program changes its working directory.
        self.path = Path(os.path.abspath(text))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._checkpointer: Checkpointer | None = None
        self._read_only = False
        with self._translate():
            try:
                self._connection().executescript(SCHEMA)
            except sqlite3.OperationalError as exc:
                if not self._archive(exc):
                    raise
        if not self._read_only:
            self._adopt_tenant_index()
        with self._translate():
            # WAL checkpoints on a background thread: a batch's commit then only syncs the WAL,
            # and the copy into the database runs beside the next batch (~8% more events/s).
            self._checkpointer = (
                Checkpointer(
                    str(self.path), self._connection(), synchronous="FULL", interval=checkpoint_interval
                )
                if checkpoint_interval is not None
                else None
            )
        if self._checkpointer is not None:  # a ledger dropped without close() stops it too
            weakref.finalize(self, self._checkpointer.close)

    def __repr__(self) -> str:
        return f"SQLiteLedger({str(self.path)!r})"

    # -- connections and transactions -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise BackendError(f"{self!r} is closed")
        connection = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new file (WAL fixes the page size): 32 KiB pages measured 10-25% faster ingestion
            # than SQLite's 4 KiB for as many bytes written, queries and reads unchanged
            # (docs/benchmarks.md). A file made by others keeps its own.
            connection.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        use_wal(connection, self._timeout)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages of a big ledger stay hot
        if self._checkpointer is not None:  # each thread's connection leaves checkpoints to it too
            connection.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        register_functions(connection)
        if self._read_only:
            connection.executescript(_READ_ONLY_TENANT_INDEX)
        if _INSERT_ROWS is not None:  # the same SQLite found: outlay_dadd and outlay_dsum in C,
            _SPEEDUPS.register_dadd(connection, dadd)  # Python's for the rest
            _SPEEDUPS.register_dsum(connection, DecimalSum)
        self._local.connection = connection
        with self._connections_lock:
            self._connections.append(connection)
        # Closed when its thread ends: each keeps file handles and up to 64 MiB of page cache,
        # and a program whose threads come and go would otherwise keep one per thread it had.
        at_thread_end(self._local, self, SQLiteLedger._release, connection)
        return connection

    def _release(self, connection: sqlite3.Connection) -> None:
        with self._connections_lock:
            if connection not in self._connections:
                return  # closed with the ledger already
            self._connections.remove(connection)
        with contextlib.suppress(sqlite3.Error):  # never raise at a thread's end
            connection.close()

    def _archive(self, exc: sqlite3.OperationalError) -> bool:
        """Whether ``exc``, raised making the schema, is that of a ledger in a read-only file (an
        archive, a snapshot on a read-only volume) made before 2026-12-07, which the release before
        read: it is read as it is then (``_READ_ONLY_TENANT_INDEX``), and writes fail."""
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY:
            return False
        connection = self._connection()
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "ledger_events" not in tables or "ledger_tenant_index" in tables:
            return False
        self._read_only = True
        connection.executescript(_READ_ONLY_TENANT_INDEX)
        return True

    def _adopt_tenant_index(self) -> None:
        """A ledger made before 2026-12-07 indexed tenants with ``ledger_events_tenant_time``, an
        index SQLite kept up on every insert: move its entries to ledger_tenant_index, once, and
        drop it (~1.2 µs per event, the write lock held: ~12 s for 10M events). An older outlay
        opening the file after rebuilds the index, and the next open moves it again; what it wrote
        meanwhile lies past ``tenants_indexed_to``, where queries read the events themselves."""
        with self._translate():
            if self._connection().execute(_OLD_TENANT_INDEX).fetchone() is None:
                return
        with self._transaction() as cursor:
            if cursor.execute(_OLD_TENANT_INDEX).fetchone() is None:
                return  # another process moved it first
            top = _last_seq(cursor)
            cursor.execute(INDEX_TENANTS, (0, top))
            cursor.execute(SET_INDEXED_TO, (top,))
            cursor.execute("DROP INDEX ledger_events_tenant_time")

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite ledger {str(self.path)!r}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        connection = self._connection()
        with self._translate():
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                connection.rollback()
                raise
            cursor.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.note_commit()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._translate():
            return self._connection().execute(sql, params).fetchall()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: several queries see the same committed state (WAL snapshot)."""
        connection = self._connection()
        if connection.in_transaction:  # already inside one (nested use): it is the snapshot
            yield
            return
        with self._translate():
            connection.execute("BEGIN")
        try:
            yield
        finally:
            with self._translate():
                connection.execute("COMMIT")

    # -- writes -----------------------------------------------------------------------------------

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        with gc_paused():  # the rows and deltas are many small acyclic objects
            return self._write(events, payloads)

    def _write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None) -> WriteResult:
        check_events(events, payloads)
        first: dict[str, int] = {}
        for index, event in enumerate(events):
            first.setdefault(event.event_id, index)
        if not first:
            return WriteResult(0, 0)
        # Rows and rollup deltas in one pass, before the write lock is taken: the deltas assume
        # every event is new, and are rebuilt in the (rare) case that some were already written.
        rows, deltas = event_rows(events, payloads, first, raw=_INSERT_ROWS is not None)
        with self._transaction() as cursor:
            before = cursor.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger_events").fetchone()[0]
            inserted = _executemany(cursor, INSERT_EVENT, rows)
            if inserted != len(rows):
                # Some ids were already known: the new rows are exactly those past the old max seq
                # (we hold the write lock), so only they reach the rollups.
                fresh = {
                    r[0]
                    for r in cursor.execute("SELECT event_id FROM ledger_events WHERE seq > ?", (before,))
                }
                deltas = RollupDeltas()
                for event_id, index in first.items():
                    if event_id in fresh:
                        event = events[index]
                        us = time_us(event.time)
                        deltas.add_event(event, rollup_key(event, day_of(us)), us, tokens_of(event))
            self._apply(cursor, deltas)
            if inserted:
                top = before + inserted  # seqs are given in order past the old max (write lock held)
                indexed = _indexed_to(cursor)
                if top - indexed > TENANT_TAIL:  # the writer had no idle time to fill it: now
                    cursor.execute(INDEX_TENANTS, (indexed, top))
                    cursor.execute(SET_INDEXED_TO, (top,))
        return WriteResult(inserted, len(events) - inserted)

    @staticmethod
    def _apply(cursor: sqlite3.Cursor, deltas: RollupDeltas, hours: RollupDeltas | None = None) -> None:
        """Add ``deltas`` (grouped by day) to the day and month rollups and to the runs, and
        ``hours`` (grouped by hour: changes to events already rolled up by hour) to the hours."""
        for sql, groups in (
            (UPSERT_ROLLUP, deltas.groups),
            (UPSERT_MONTH, deltas.months()),
            (UPSERT_HOUR, hours.groups if hours is not None else {}),
        ):
            rows = [(*key, a.events, a.unpriced, _text(a.cost), *a.tokens) for key, a in groups.items()]
            _executemany(cursor, sql, rows)
        _executemany(
            cursor,
            UPSERT_RUN,
            [
                (
                    run_id,
                    r.parent_run_id,
                    r.root_run_id,
                    r.tenant_id,
                    r.agent,
                    r.acc.events,
                    r.acc.unpriced,
                    _text(r.acc.cost),
                    r.first_us,
                    r.last_us,
                )
                for run_id, r in deltas.runs.items()
            ],
        )

    def reject(self, payload: bytes, reason: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO ledger_rejects VALUES (?, ?, ?, ?)",
                (hashlib.sha256(payload).digest(), time_us(datetime.now(UTC)), reason, bytes(payload)),
            )

    def rejected(self, limit: int = 100) -> list[Rejected]:
        rows = self._query(
            "SELECT time_us, reason, payload FROM ledger_rejects ORDER BY time_us DESC LIMIT ?", (limit,)
        )
        return [Rejected(_from_us(us), reason, payload) for us, reason, payload in rows]

    def append_adjustments(
        self, ratings: Sequence[tuple[str, Rating]], *, at: datetime | None = None
    ) -> list[Adjustment]:
        check_adjustment_time(at)
        for event_id, rating in ratings:
            check_rating(event_id, rating)
        if not ratings:
            return []
        appended: list[Adjustment] = []
        with self._transaction() as cursor:
            # Stamped under the write lock, so a period close (wait_for_writes) sees every
            # adjustment dated before its cutoff.
            moment = at or datetime.now(UTC)
            current: dict[str, list[Any]] = {}
            ids = list(dict.fromkeys(event_id for event_id, _ in ratings))
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                sql = (
                    f"SELECT e.event_id, e.time_us, e.tenant, e.day, e.feature, e.agent, e.model, e.provider,"
                    f" e.operation, e.environment, e.origin, e.run_id, {EFFECTIVE}, e.seq FROM {FROM_EVENTS}"
                    f" WHERE e.event_id IN ({_placeholders(len(chunk))})"
                )
                for row in cursor.execute(sql, chunk):
                    current[row[0]] = list(row)
            missing = [event_id for event_id in ids if event_id not in current]
            if missing:
                raise InvalidInput(f"no event {missing[0]!r} in the ledger", field="event_id")
            deltas = RollupDeltas()
            hours = RollupDeltas()  # for the events already rolled up by hour
            rolled = _rolled_to(cursor)
            for event_id, rating in ratings:
                row = current[event_id]
                priced, cost = bool(row[12]), _money(row[13])
                if not wants_adjustment(priced, cost, rating):
                    continue
                assert rating.cost is not None  # a priced rating has a cost
                delta = MONEY_CONTEXT.subtract(rating.cost, cost or ZERO)
                appended.append(
                    Adjustment(
                        str(uuid_utils.uuid7()),
                        event_id,
                        moment,
                        rating.price_version,
                        True,
                        rating.cost,
                        cost,
                        delta,
                    )
                )
                deltas.add_adjustment(tuple(row[2:11]), row[11], row[1], delta, 0 if priced else -1)
                if row[17] <= rolled:
                    key = (row[2], hour_of(row[1]), *row[4:11])
                    hours.add_adjustment(key, None, row[1], delta, 0 if priced else -1)
                row[12:17] = [1, money_str(rating.cost), rating.price_version, None, row[16] + 1]
            cursor.executemany(
                "INSERT INTO ledger_adjustments VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.adjustment_id,
                        a.event_id,
                        time_us(a.time),
                        a.price_version,
                        a.priced,
                        _text(a.cost),
                        _text(a.previous_cost),
                        money_str(a.delta),
                        a.unpriced_reason,
                    )
                    for a in appended
                ],
            )
            cursor.executemany(
                "INSERT OR REPLACE INTO ledger_event_state VALUES (?, ?, ?, ?, ?, ?)",
                [(event_id, *current[event_id][12:17]) for event_id in {a.event_id: 0 for a in appended}],
            )
            self._apply(cursor, deltas, hours)
        return appended

    def wait_for_writes(self) -> None:
        # BEGIN IMMEDIATE waits for the write lock: every write transaction begun before has ended.
        with self._transaction():
            pass

    # -- reads ------------------------------------------------------------------------------------

    def adjustments(self, event_id: str | None = None) -> list[Adjustment]:
        sql = (
            "SELECT adjustment_id, event_id, time_us, price_version, priced, cost, previous_cost, delta,"
            " unpriced_reason FROM ledger_adjustments"
        )
        rows = (
            self._query(sql + " ORDER BY seq")
            if event_id is None
            else self._query(sql + " WHERE event_id = ? ORDER BY seq", (event_id,))
        )
        return [
            Adjustment(
                aid,
                eid,
                _from_us(us),
                version,
                bool(priced),
                _money(cost),
                _money(previous),
                Decimal(delta),
                reason,
            )
            for aid, eid, us, version, priced, cost, previous, delta, reason in rows
        ]

    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        tenant: str | None = None,
        operation_prefix: str | None = None,
    ) -> Iterator[LedgerEntry]:
        check_entries_tenant(tenant)
        high = time_us(end)
        position = (time_us(start), -1)  # seq > -1: the first page includes time == start
        rest: tuple[str, ...] = ()
        operation = ""
        if operation_prefix:
            # A range, not LIKE: no wildcards to escape, and TEXT compares bytewise (BINARY collation).
            condition, rest = prefix_filter("e.operation", operation_prefix, "?")
            operation = " AND " + condition
        select = f"SELECT e.seq, e.time_us, e.payload, {EFFECTIVE} FROM"
        if tenant is not None:
            yield from self._tenant_entries(select, tenant, position, high, operation, rest)
            return
        # A row-value bound, so each page is an index seek to where the last one stopped (an OR of
        # time and seq made SQLite rescan from the window's start on every page: quadratic).
        sql = (
            f"{select} {FROM_EVENTS} WHERE (e.time_us, e.seq) > (?, ?) AND e.time_us < ?{operation}"
            " ORDER BY e.time_us, e.seq LIMIT ?"
        )
        while True:
            # Page by (time, seq) so no read transaction stays open while the caller works.
            rows = self._query(sql, (*position, high, *rest, _PAGE))
            for seq, us, payload, priced, cost, version, reason, count in rows:
                position = (us, seq)
                yield LedgerEntry(decode_event(payload), bool(priced), _money(cost), version, reason, count)
            if len(rows) < _PAGE:
                return

    def _tenant_entries(
        self,
        select: str,
        tenant: str,
        position: tuple[int, int],
        high: int,
        operation: str,
        rest: tuple[str, ...],
    ) -> Iterator[LedgerEntry]:
        """``entries`` of one tenant: its indexed events from ledger_tenant_index, those past
        ``tenants_indexed_to`` from the events. The latter have no index: each is looked at once
        for the whole read (the (time, seq) of the tenant's kept in ``waiting``), not once per page,
        which made a big tenant's export scan up to TENANT_TAIL rows for every page of it."""
        indexed_sql = (
            f"{select} ledger_tenant_index i CROSS JOIN ledger_events e ON e.seq = i.seq"
            " LEFT JOIN ledger_event_state s ON s.event_id = e.event_id"
            f" WHERE i.tenant = ? AND (i.time_us, i.seq) > (?, ?) AND i.time_us < ?{operation}"
            " ORDER BY i.time_us, i.seq LIMIT ?"
        )
        # NOT INDEXED: the seq range (bounded by TENANT_TAIL), never the time index over a window.
        # (No upper bound: the snapshot holds no seq past ``top``, and one costs a test per row.)
        scan_sql = (
            "SELECT e.time_us, e.seq FROM ledger_events e NOT INDEXED WHERE e.seq > ?"
            f" AND e.tenant = ? AND (e.time_us, e.seq) > (?, ?) AND e.time_us < ?{operation}"
        )
        waiting: list[tuple[int, int]] = []  # sorted: the tenant's events past the index, unread
        scanned = 0  # the seq up to which the events past the index have been looked at
        pruned_at = 0  # the watermark ``waiting`` holds no event at or below
        while True:
            # Each page in one read transaction (the watermark, the scan and the rows agree),
            # none open while the caller works.
            with self._snapshot(), self._translate():
                cursor = self._connection().cursor()
                indexed, top = _indexed_to(cursor), _last_seq(cursor)
                if indexed > pruned_at:  # filled meanwhile: those events now come from the index
                    waiting = [item for item in waiting if item[1] > indexed]
                    pruned_at = indexed
                low = max(indexed, scanned)
                if top > low:
                    waiting += cursor.execute(scan_sql, (low, tenant, *position, high, *rest)).fetchall()
                    waiting.sort()
                    scanned = top
                del waiting[: bisect.bisect_right(waiting, position)]
                page = [seq for _, seq in waiting[:_PAGE]]
                sql, params = indexed_sql, [tenant, *position, high, *rest, _PAGE]
                if page:
                    by_seq = (
                        f"{select} {FROM_EVENTS} WHERE e.seq IN ({_placeholders(len(page))})"
                        " ORDER BY e.time_us, e.seq"
                    )
                    sql = f"SELECT * FROM ({indexed_sql}) UNION ALL SELECT * FROM ({by_seq})"
                    sql += " ORDER BY 2, 1 LIMIT ?"
                    params += [*page, _PAGE]
                rows = cursor.execute(sql, params).fetchall()
            for seq, us, payload, priced, cost, version, reason, count in rows:
                position = (us, seq)
                yield LedgerEntry(decode_event(payload), bool(priced), _money(cost), version, reason, count)
            if len(rows) < _PAGE:
                return

    def maintain(self, *, max_events: int = 5000) -> bool:
        """Roll up by hour the next ``max_events`` events not rolled up yet and index by tenant the
        next ``10 * max_events`` not indexed yet (in seq order, in one transaction: the tenant
        index is cheaper per event the more it takes at once); ``True`` if more are left. The
        writer calls it when it has nothing else to do; until then queries read those events
        from the events themselves (still exact)."""
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise InvalidInput(f"must be a positive integer, got {max_events!r}", field="max_events")
        with self._translate():  # nothing to do (the writer asks after every batch): no write lock
            cursor = self._connection().cursor()
            if _last_seq(cursor) <= min(_rolled_to(cursor), _indexed_to(cursor)):
                return False
        with self._transaction() as cursor:
            rolled, indexed, top = _rolled_to(cursor), _indexed_to(cursor), _last_seq(cursor)
            if rolled < top:
                rolled_end = min(rolled + max_events, top)
                cursor.execute(ROLL_UP_HOURS, (rolled, rolled_end))
                cursor.execute(SET_ROLLED_TO, (rolled_end,))
                rolled = rolled_end
            if indexed < top:
                indexed_end = min(indexed + 10 * max_events, top)
                cursor.execute(INDEX_TENANTS, (indexed, indexed_end))
                cursor.execute(SET_INDEXED_TO, (indexed_end,))
                indexed = indexed_end
        return min(rolled, indexed) < top

    def event_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM ledger_events")[0][0])

    def rollup_totals(
        self,
        by: Sequence[str],
        start: date,
        end: date,
        *,
        environment: str | None = None,
        tenant: str | None = None,
        unattributed: bool = False,
    ) -> list[Totals]:
        keys = check_by(by)
        parts = [(1, "day", start, end)] if "day" in keys or start >= end else plan(start, end)
        signed: list[tuple[int, Totals]] = []
        scope = _Scope(environment, tenant, unattributed)
        # A month read minus its day reads must see one state, or a write landing between them
        # would be counted in one part and not the other.
        with self._snapshot():
            for sign, grain, low, high in parts:
                table, column = (
                    ("ledger_rollups", "day") if grain == "day" else ("ledger_rollups_month", "month")
                )
                bounds = (
                    (low.isoformat(), high.isoformat())
                    if grain == "day"
                    else (low.isoformat()[:7], high.isoformat()[:7])
                )
                signed.extend((sign, t) for t in self._grain_totals(table, column, *bounds, keys, scope))
        if len(parts) == 1 and parts[0][0] == 1:
            return [t for _, t in signed]
        return combine(signed)

    def event_totals(
        self,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        environment: str | None = None,
        tenant: str | None = None,
        unattributed: bool = False,
        unpriced_only: bool = False,
    ) -> list[Totals]:
        keys = check_by(by, EVENT_GROUP_KEYS)
        low, high = time_us(start), time_us(end)
        first_hour = -(-low // US_PER_HOUR) * US_PER_HOUR
        last_hour = high // US_PER_HOUR * US_PER_HOUR
        scope = _Scope(environment, tenant, unattributed)
        if unpriced_only or "reason" in keys or first_hour >= last_hour:
            return self._scan_totals(keys, low, high, scope, unpriced_only=unpriced_only)
        # The whole hours from the hour rollups plus their events not rolled up yet, the rest
        # (under an hour at each end) from the events; all in one read transaction, so that a
        # write or a roll-up cannot fall between two parts.
        with self._snapshot():
            rolled = _rolled_to(self._connection().cursor())
            if not rolled:
                return self._scan_totals(keys, low, high, scope)
            parts = self._grain_totals(
                "ledger_rollups_hour", "hour", hour_of(first_hour), hour_of(last_hour), keys, scope
            )
            # (Read through the time index, whose entries carry the seq: rolled-up events are
            # skipped without reading their rows.)
            parts += self._scan_totals(keys, first_hour, last_hour, scope, after_seq=rolled)
            if low < first_hour:
                parts += self._scan_totals(keys, low, first_hour, scope)
            if last_hour < high:
                parts += self._scan_totals(keys, last_hour, high, scope)
        return combine((1, part) for part in parts)

    def _grain_totals(
        self, table: str, column: str, low: str, high: str, keys: tuple[str, ...], scope: _Scope
    ) -> list[Totals]:
        """Totals of the rollup rows ``low <= column < high`` of ``table`` (day, month or hour
        rollups; an hour table answers ``day`` with its hours' first 10 characters)."""
        where, params = [f"{column} >= ?", f"{column} < ?"], [low, high]
        filters(where, params, "", **scope._asdict())
        day = "substr(hour, 1, 10)" if column == "hour" else "day"
        columns = ", ".join(day if name == "day" else name for name in keys)
        sums = f"SUM(events), SUM(unpriced_events), outlay_dsum(cost), {SUMS}"
        select = f"{columns}, {sums}" if keys else sums
        sql = f"SELECT {select} FROM {table} WHERE {' AND '.join(where)}"
        if keys:
            sql += f" GROUP BY {columns}"
        return totals(self._query(sql, params), len(keys))

    def _scan_totals(
        self,
        keys: tuple[str, ...],
        low: int,
        high: int,
        scope: _Scope,
        *,
        unpriced_only: bool = False,
        after_seq: int = 0,
    ) -> list[Totals]:
        """Totals of the events ``low <= time_us < high`` (and ``seq > after_seq``), read from the
        events themselves."""
        where, params = ["e.time_us >= ?", "e.time_us < ?"], [low, high]
        if after_seq:
            where.append("e.seq > ?")
            params.append(after_seq)
        source, seqs = FROM_EVENTS, []
        if scope.tenant is not None or scope.unattributed:
            # One tenant's events: their seqs first (ledger_tenant_index and the events past it),
            # then their rows, never the whole window's (CROSS JOIN keeps that order).
            condition = " AND ".join(part[2:] for part in where)
            source = (
                f"({tenant_seqs(condition)}) t CROSS JOIN ledger_events e ON e.seq = t.seq"
                " LEFT JOIN ledger_event_state s ON s.event_id = e.event_id"
            )
            key = scope.tenant if scope.tenant is not None else ""
            seqs = [key, *params, key, *params]
        filters(where, params, "e.", **scope._asdict())
        if unpriced_only:
            # Re-rating never unprices an event, so effective-unpriced ones are originally unpriced:
            # ``e.priced = 0`` lets SQLite use the partial index.
            where.append("e.priced = 0 AND COALESCE(s.priced, 0) = 0")
        columns = ", ".join("eff_reason" if name == "reason" else f"e.{name}" for name in keys)
        select = (
            f"{columns + ', ' if keys else ''}COUNT(*), SUM(1 - eff_priced), outlay_dsum(eff_cost), "
            + ", ".join(f"SUM(e.{name})" for name in TOKENS.split(", "))
        )
        inner = f"SELECT e.*, {EFFECTIVE} FROM {source} WHERE {' AND '.join(where)}"
        sql = f"SELECT {select} FROM ({inner}) e"
        if keys:
            sql += f" GROUP BY {columns}"
        return totals(self._query(sql, [*seqs, *params]), len(keys))

    def runs(
        self,
        *,
        run_ids: Sequence[str] = (),
        parent_run_ids: Sequence[str] = (),
        root_run_id: str | None = None,
    ) -> list[RunTotals]:
        # One query per condition and per chunk of ids (a run with 100,000 children gives a frontier of
        # 100,000 parents: more variables than SQLite allows in one statement), each run once.
        queries: list[tuple[str, Sequence[Any]]] = []
        for column, ids in (("run_id", run_ids), ("parent_run_id", parent_run_ids)):
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                queries.append((f"{column} IN ({_placeholders(len(chunk))})", chunk))
        if root_run_id is not None:
            queries.append(("root_run_id = ?", (root_run_id,)))
        found: dict[str, RunTotals] = {}
        with self._snapshot():
            for where, params in queries:
                rows = self._query(
                    "SELECT run_id, parent_run_id, root_run_id, tenant_id, agent, events, unpriced_events,"
                    f" cost FROM ledger_runs WHERE {where}",
                    params,
                )
                for run_id, parent, root, tenant, agent, events, unpriced, cost in rows:
                    if run_id not in found:
                        found[run_id] = RunTotals(
                            run_id, parent, root, tenant, agent, events, unpriced, _money(cost)
                        )
        return list(found.values())

    def close(self) -> None:
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


def _last_seq(cursor: sqlite3.Cursor) -> int:
    return int(cursor.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger_events").fetchone()[0])


def _rolled_to(cursor: sqlite3.Cursor) -> int:
    """The seq up to which every event is counted in the hour rollups (0: none)."""
    row = cursor.execute(ROLLED_TO).fetchone()
    return 0 if row is None else int(row[0])


def _indexed_to(cursor: sqlite3.Cursor) -> int:
    """The seq up to which every event is in ledger_tenant_index (0: none)."""
    row = cursor.execute(INDEXED_TO).fetchone()
    return 0 if row is None else int(row[0])


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
