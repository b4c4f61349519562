"""The write transactions of the PostgreSQL ledger: event batches and re-rating adjustments.

A batch's rollup changes are aggregated in SQL from the staged new events (one GROUP BY per
rollup table: no per-event Python work, exact NUMERIC sums); its runs' totals and links, and
re-rating deltas, are aggregated in Python (:class:`RollupDeltas`, shared with the other ledgers, so
a run's parent, root and agent are chosen as they choose them) and staged by COPY. All are upserted
in primary-key order with ``cost = COALESCE(r.cost + excluded.cost, r.cost, excluded.cost)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import psycopg
import uuid_utils

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT, ZERO
from outlay._rating import Rating
from outlay.events import CostEvent, encode_event

from ._base import Adjustment
from ._postgres_query import EFFECTIVE, FROM_EVENTS
from ._postgres_schema import (
    DELTA_FROM_STAGING,
    DELTA_TYPES,
    DIMENSIONS,
    INSERT_ADJUSTMENT,
    INSERT_EVENTS,
    INSERT_IDS,
    MONTHS_FROM_DELTA,
    ROLLUPS_FROM_DELTA,
    RUN_DELTA_TYPES,
    RUNS_FROM_DELTA,
    STAGING_COLUMNS,
    STAGING_TYPES,
    UPSERT_EVENT_STATE,
)
from ._postgres_session import Connection, Session
from ._rows import RollupDeltas, RunAcc, time_us, wants_adjustment

__all__ = ["Batch", "adjust", "write_batch"]

Cursor = psycopg.Cursor[Any]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_STAGING: Final = f"COPY pg_temp.outlay_staging ({STAGING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_DROP_KNOWN: Final = (
    "DELETE FROM pg_temp.outlay_staging s USING unnest(%s::text[]) d(id) WHERE s.event_id = d.id"
)
# Columns 2-10 are the rollup key in GROUP_KEYS order (tenant, day, feature, ...), 11 the run,
# 12-16 the effective rating.
_CURRENT: Final = (
    "SELECT e.event_id, e.time, e.tenant, to_char(e.day, 'YYYY-MM-DD'), "
    + ", ".join(f"e.{name}" for name in DIMENSIONS.split(", ")[1:])
    + f", e.run_id, {EFFECTIVE} FROM {{s}}.event_ids i JOIN {FROM_EVENTS}"
    " ON e.event_id = i.event_id AND e.time = i.time WHERE i.event_id = ANY(%s)"
)
_LOCK_IDS: Final = "SELECT event_id FROM {s}.event_ids WHERE event_id = ANY(%s) ORDER BY 1 FOR UPDATE"


class Batch:
    """A batch of distinct events as staging rows, the UTC months it touches, and its runs' totals
    and links (added up as the other ledgers do, :meth:`RollupDeltas.add_run`), before any I/O."""

    __slots__ = ("events", "months", "rows", "runs")

    def __init__(self, events: Sequence[CostEvent], payloads: Sequence[bytes] | None) -> None:
        first: dict[str, int] = {}
        for index, event in enumerate(events):
            first.setdefault(event.event_id, index)  # duplicates inside a batch: the first wins
        rows: list[tuple[Any, ...]] = []
        months: set[tuple[int, int]] = set()
        runs = RollupDeltas()
        distinct: list[CostEvent] = []
        # The hot path of ingestion (runs once per event): plain attribute reads, no helper calls.
        for event_id, index in first.items():
            event = events[index]
            moment = event.time
            utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
            months.add((utc.year, utc.month))
            tenant = event.tenant_id
            usage = event.usage
            distinct.append(event)
            if event.run_id is not None:
                runs.add_run(event, time_us(moment))
            rows.append(
                (
                    event_id,
                    moment,
                    tenant or "",
                    event.feature or "",
                    event.agent or "",
                    event.model or "",
                    event.provider or "",
                    event.operation,
                    event.environment,
                    (event.origin or "") if tenant is None else "",  # as in rollup_key()
                    event.run_id,
                    event.parent_run_id,
                    event.root_run_id,
                    event.priced,
                    event.cost,
                    event.unpriced_reason,
                    event.price_version,
                    usage.input_tokens,
                    usage.cache_read_tokens,
                    usage.cache_write_tokens,
                    usage.output_tokens,
                    usage.reasoning_tokens,
                    payloads[index] if payloads is not None else encode_event(event),
                    len(rows),
                )
            )
        self.rows = rows
        self.months = {f"{year:04d}-{month:02d}" for year, month in months}
        self.events = distinct
        self.runs = runs.runs

    def runs_of(self, fresh: set[str]) -> dict[str, RunAcc]:
        """The runs' totals and links of the events with ids in ``fresh`` only."""
        runs = RollupDeltas()
        for event in self.events:
            if event.run_id is not None and event.event_id in fresh:
                runs.add_run(event, time_us(event.time))
        return runs.runs


def write_batch(session: Session, connection: Connection, batch: Batch) -> int:
    """Write ``batch`` in one transaction; returns how many of its events were new."""
    session.ensure_partitions(connection, batch.months)
    with connection.transaction(), connection.cursor() as cursor:
        with cursor.copy(_COPY_STAGING) as copy:
            copy.set_types(STAGING_TYPES)
            for row in batch.rows:
                copy.write_row(row)
        cursor.execute(session.sql(INSERT_IDS))
        inserted = cursor.rowcount
        runs = batch.runs
        if inserted != len(batch.rows):
            # Some ids were known (a replay, or another writer got there first): only the ids
            # this transaction claimed stay staged, to reach the events table and the rollups.
            fresh = {row[0] for row in cursor.fetchall()}
            cursor.execute(_DROP_KNOWN, ([row[0] for row in batch.rows if row[0] not in fresh],))
            runs = batch.runs_of(fresh)
        if inserted:
            # Rollups are aggregated from the staged new events in SQL (exact NUMERIC sums).
            for statement in (INSERT_EVENTS, DELTA_FROM_STAGING, ROLLUPS_FROM_DELTA, MONTHS_FROM_DELTA):
                cursor.execute(session.sql(statement))
        if runs:  # added up in Python, as by the other ledgers: the same runs, links and agents
            _apply_runs(session, cursor, runs)
    return inserted


def apply_deltas(session: Session, cursor: Cursor, deltas: RollupDeltas) -> None:
    """Upsert the day, month and run rollups by ``deltas`` (in the caller's transaction)."""
    with cursor.copy("COPY pg_temp.outlay_delta FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(DELTA_TYPES)
        for key, acc in deltas.groups.items():
            copy.write_row(
                (
                    date.fromisoformat(key[1]),
                    key[0],
                    *key[2:],
                    acc.events,
                    acc.unpriced,
                    acc.cost,
                    *acc.tokens,
                )
            )
    cursor.execute(session.sql(ROLLUPS_FROM_DELTA))
    cursor.execute(session.sql(MONTHS_FROM_DELTA))
    if deltas.runs:
        _apply_runs(session, cursor, deltas.runs)


def _apply_runs(session: Session, cursor: Cursor, runs: dict[str, RunAcc]) -> None:
    """Upsert the per-run totals and links of ``runs`` (in the caller's transaction)."""
    with cursor.copy("COPY pg_temp.outlay_run_delta FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(RUN_DELTA_TYPES)
        for run_id, run in runs.items():
            copy.write_row(
                (
                    run_id,
                    run.parent_run_id,
                    run.root_run_id,
                    run.tenant_id,
                    run.agent,
                    run.acc.events,
                    run.acc.unpriced,
                    run.acc.cost,
                    _EPOCH + timedelta(microseconds=run.first_us),
                    _EPOCH + timedelta(microseconds=run.last_us),
                )
            )
    cursor.execute(session.sql(RUNS_FROM_DELTA))


#: Held (shared) by every adjustment transaction, taken exclusively by ``wait_for_writes``: a period
#: close then waits for every re-rating that may have stamped its adjustments before its cutoff.
ADJUSTING_LOCK: Final = "SELECT pg_advisory_xact_lock{mode}(hashtext(%s))"


def adjusting_lock_name(session: Session) -> str:
    return f"outlay.adjustments:{session.schema}"


def adjust(
    session: Session, connection: Connection, ratings: Sequence[tuple[str, Rating]], at: datetime | None
) -> list[Adjustment]:
    """Append the adjustments ``ratings`` call for, in one transaction (see ``append_adjustments``)."""
    ids = sorted({event_id for event_id, _ in ratings})
    appended: list[Adjustment] = []
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(ADJUSTING_LOCK.format(mode="_shared"), (adjusting_lock_name(session),))
        # Stamped inside the transaction, after the lock: a period close (wait_for_writes) that
        # took its cutoff after this moment waits for this transaction to commit.
        moment = at or datetime.now(UTC)
        # Lock the ids first (in id order): a concurrent re-rating of the same events waits, then
        # compares with the cost this one committed, so the same rating is appended only once.
        cursor.execute(session.sql(_LOCK_IDS), (ids,))
        found = {row[0] for row in cursor.fetchall()}
        missing = [event_id for event_id, _ in ratings if event_id not in found]
        if missing:
            raise InvalidInput(f"no event {missing[0]!r} in the ledger", field="event_id")
        cursor.execute(session.sql(_CURRENT), (ids,))
        current = {row[0]: list(row) for row in cursor.fetchall()}
        deltas = RollupDeltas()
        for event_id, rating in ratings:
            row = current[event_id]
            priced, cost = bool(row[12]), row[13]
            if not wants_adjustment(priced, cost, rating):
                continue
            assert rating.cost is not None  # a priced rating has a cost
            delta = MONEY_CONTEXT.subtract(rating.cost, cost or ZERO)
            adjustment_id = str(uuid_utils.uuid7())
            appended.append(
                Adjustment(
                    adjustment_id, event_id, moment, rating.price_version, True, rating.cost, cost, delta
                )
            )
            deltas.add_adjustment(tuple(row[2:11]), row[11], time_us(row[1]), delta, 0 if priced else -1)
            row[12:17] = [True, rating.cost, rating.price_version, None, row[16] + 1]
        if not appended:
            return appended
        cursor.executemany(
            session.sql(INSERT_ADJUSTMENT),
            [
                (
                    a.adjustment_id,
                    a.event_id,
                    a.time,
                    a.price_version,
                    a.priced,
                    a.cost,
                    a.previous_cost,
                    a.delta,
                    a.unpriced_reason,
                )
                for a in appended
            ],
        )
        cursor.executemany(
            session.sql(UPSERT_EVENT_STATE),
            [(event_id, *current[event_id][12:17]) for event_id in sorted({a.event_id for a in appended})],
        )
        apply_deltas(session, cursor, deltas)
    return appended
