"""``PostgresLedger``: the ledger on PostgreSQL (psycopg 3), for several writers and big ledgers.

A write is one transaction: the batch is binary-COPYed into a session temp table, its ids are
claimed in ``event_ids`` (``ON CONFLICT DO NOTHING RETURNING`` says which are new), the new events
are moved into the month partitions of ``events``, and the rollups of the new events only are
upserted. Replays and concurrent overlapping batches therefore change no total. Connections,
retries and migrations: ``_postgres_session``; schema: ``_postgres_schema``. See docs/postgres.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

from outlay._errors import ConfigError
from outlay._rating import Rating
from outlay.events import CostEvent, decode_event

from ._base import (
    EVENT_GROUP_KEYS,
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
from ._postgres_query import EFFECTIVE, FROM_EVENTS, event_totals_sql, rollup_totals_sql, runs_sql, to_totals
from ._postgres_session import Connection, Session
from ._postgres_write import ADJUSTING_LOCK, Batch, adjust, adjusting_lock_name, write_batch
from ._rows import check_adjustment_time, check_by, check_events, check_rating

__all__ = ["PostgresLedger"]

_PAGE: Final = 1000


class PostgresLedger(LedgerStore):
    """The ledger in schema ``schema`` of the PostgreSQL database at ``url``.

    ``schema`` defaults to the URL's ``?schema=`` parameter, else ``outlay``. The schema is created
    and migrated on first use (several processes may start at once; see ``schema_migrations``);
    with ``create=False`` a schema holding no ledger is a ``ConfigError`` instead (a report must not
    read a new, empty ledger from a mistyped name). Each thread uses its own connection.
    ``connect_timeout`` is in seconds.
    """

    def __init__(
        self, url: str, *, schema: str | None = None, connect_timeout: int = 5, create: bool = True
    ) -> None:
        self._session = Session(url, schema, connect_timeout)
        self.url = self._session.url
        self.schema = self._session.schema
        try:
            if not create:  # a report on a mistyped schema: an error, not a new, empty ledger
                self._session.run(self._require_ledger)
            self._session.run(self._session.migrate)
        except BaseException:
            self._session.close()  # nobody else holds this ledger: release its connection now
            raise

    def __repr__(self) -> str:
        return f"PostgresLedger(<{self._session.name}>)"

    def _require_ledger(self, connection: Connection) -> None:
        found = connection.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (self._session.sql("{s}.schema_migrations"),)
        ).fetchone()
        if not found or not found[0]:
            raise ConfigError(
                f"no ledger in {self._session.name} (check ?schema=, or pass --ledger or set"
                " OUTLAY_LEDGER_URL or OUTLAY_URL)",
                field="ledger",
            )

    @property
    def application_name(self) -> str:
        """The ``application_name`` of this ledger's connections (visible in ``pg_stat_activity``)."""
        return self._session.application_name

    # -- writes -------------------------------------------------------------------------------------

    def write(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None = None) -> WriteResult:
        check_events(events, payloads)
        batch = Batch(events, payloads)
        if not batch.rows:
            return WriteResult(0, 0)
        session = self._session
        inserted = session.run(lambda connection: write_batch(session, connection, batch))
        return WriteResult(inserted, len(events) - inserted)

    def reject(self, payload: bytes, reason: str) -> None:
        row = (hashlib.sha256(payload).digest(), datetime.now(UTC), reason, bytes(payload))
        sql = self._session.sql(
            "INSERT INTO {s}.rejects VALUES (%s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING"
        )
        self._session.run(lambda connection: connection.execute(sql, row).rowcount)

    def rejected(self, limit: int = 100) -> list[Rejected]:
        sql = "SELECT time, reason, payload FROM {s}.rejects ORDER BY time DESC LIMIT %s"
        return [Rejected(*row) for row in self._query(sql, (limit,))]

    def append_adjustments(
        self, ratings: Sequence[tuple[str, Rating]], *, at: datetime | None = None
    ) -> list[Adjustment]:
        check_adjustment_time(at)
        for event_id, rating in ratings:
            check_rating(event_id, rating)
        if not ratings:
            return []
        session = self._session
        return session.run(lambda connection: adjust(session, connection, ratings, at))

    def wait_for_writes(self) -> None:
        session = self._session
        lock = ADJUSTING_LOCK.format(mode="")
        name = adjusting_lock_name(session)

        def wait(connection: Connection) -> None:
            with connection.transaction():  # exclusive: waits for every adjustment in progress
                connection.execute(lock, (name,))

        session.run(wait)

    # -- reads --------------------------------------------------------------------------------------

    def _query(self, template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        sql = self._session.sql(template)
        return self._session.run(lambda connection: connection.execute(sql, params).fetchall())

    def adjustments(self, event_id: str | None = None) -> list[Adjustment]:
        sql = (
            "SELECT adjustment_id, event_id, time, price_version, priced, cost, previous_cost, delta,"
            " unpriced_reason FROM {s}.adjustments"
        )
        if event_id is None:
            rows = self._query(sql + " ORDER BY seq")
        else:
            rows = self._query(sql + " WHERE event_id = %s ORDER BY seq", (event_id,))
        return [Adjustment(*row) for row in rows]

    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        tenant: str | None = None,
        operation_prefix: str | None = None,
    ) -> Iterator[LedgerEntry]:
        check_entries_tenant(tenant)
        where = "e.time >= %s AND e.time < %s AND (e.time, e.seq) > (%s, %s)"
        first: tuple[str, ...] = ()
        if tenant is not None:
            where = "e.tenant = %s AND " + where  # index events_tenant_time
            first = (tenant,)
        rest: tuple[str, ...] = ()
        if operation_prefix:
            # A range, not LIKE: no wildcards to escape, and operation is COLLATE "C" (byte order).
            condition, rest = prefix_filter("e.operation", operation_prefix, "%s")
            where += " AND " + condition
        sql = (
            f"SELECT e.seq, e.time, e.payload, {EFFECTIVE} FROM {FROM_EVENTS}"
            f" WHERE {where} ORDER BY e.time, e.seq LIMIT %s"
        )
        position: tuple[datetime, int] = (start, -1)  # seq > -1: the first page includes time == start
        while True:
            # Page by (time, seq) so no transaction stays open while the caller works.
            rows = self._query(sql, (*first, start, end, *position, *rest, _PAGE))
            for seq, moment, payload, priced, cost, version, reason, count in rows:
                position = (moment, seq)
                yield LedgerEntry(decode_event(payload), priced, cost, version, reason, count)
            if len(rows) < _PAGE:
                return

    def event_count(self) -> int:
        return int(self._query("SELECT count(*) FROM {s}.event_ids")[0][0])

    def _snapshot(self, statements: list[tuple[str, list[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run read statements in one snapshot, so "month minus days" never sees a write in between."""

        def work(connection: Connection) -> list[list[tuple[Any, ...]]]:
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return [
                    connection.execute(self._session.sql(sql), params).fetchall()
                    for sql, params in statements
                ]

        return self._session.run(work)

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
        statements = [
            rollup_totals_sql(
                keys, grain, low, high, environment=environment, tenant=tenant, unattributed=unattributed
            )
            for _, grain, low, high in parts
        ]
        results = self._snapshot(statements)
        if len(parts) == 1 and parts[0][0] == 1:
            return to_totals(results[0], len(keys))
        return combine(
            (sign, t)
            for (sign, *_), rows in zip(parts, results, strict=True)
            for t in to_totals(rows, len(keys))
        )

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
        sql, params = event_totals_sql(
            keys,
            start,
            end,
            environment=environment,
            tenant=tenant,
            unattributed=unattributed,
            unpriced_only=unpriced_only,
        )
        return to_totals(self._query(sql, params), len(keys))

    def runs(
        self,
        *,
        run_ids: Sequence[str] = (),
        parent_run_ids: Sequence[str] = (),
        root_run_id: str | None = None,
    ) -> list[RunTotals]:
        query = runs_sql(run_ids, parent_run_ids, root_run_id)
        if query is None:
            return []
        return [RunTotals(*row) for row in self._query(*query)]

    def close(self) -> None:
        self._session.close()
