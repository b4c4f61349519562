"""Schema and exact-decimal SQL functions of the SQLite ledger.

Money columns are TEXT holding the exact decimal ("0.000000018750000000" stays exact): SQLite's
REAL would round and its INTEGER cannot hold 18-decimal prices in any fixed unit. Sums run in
Python ``Decimal`` under ``MONEY_CONTEXT`` through two registered functions, ``outlay_dadd(a, b)``
(used by the rollup upserts) and the aggregate ``outlay_dsum(x)`` (used by queries). ``NULL`` means
"no priced event", so ``outlay_dadd(NULL, NULL)`` stays ``NULL``: unknown never becomes zero.

Dimension columns of events and rollups hold ``''`` for an absent value, so that the rollup
primary key is a plain unique key (SQLite treats NULLs in a unique key as distinct). Tables are
prefixed ``ledger_`` so the ledger can share a database file with the SQLite event log.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any, Final, cast

from outlay._money import MONEY_CONTEXT, money_str
from outlay.ledger._base import Totals
from outlay.ledger._rows import hour_of

__all__ = [
    "EFFECTIVE",
    "FROM_EVENTS",
    "INDEXED_SEQ",
    "INDEXED_TO",
    "INDEX_TENANTS",
    "INSERT_EVENT",
    "ROLLED_TO",
    "ROLL_UP_HOURS",
    "SCHEMA",
    "SET_INDEXED_TO",
    "SET_ROLLED_TO",
    "SUMS",
    "TENANT_TAIL",
    "TOKENS",
    "UPSERT_HOUR",
    "UPSERT_MONTH",
    "UPSERT_ROLLUP",
    "UPSERT_RUN",
    "DecimalSum",
    "dadd",
    "filters",
    "register_functions",
    "tenant_seqs",
    "totals",
]


def _rollup_table(name: str, grain: str) -> str:
    """The DDL of a rollup table: the totals per ``grain`` (day, month or hour) and key."""
    return f"""CREATE TABLE IF NOT EXISTS {name} (
    {grain} TEXT NOT NULL,
    tenant TEXT NOT NULL,
    feature TEXT NOT NULL,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    environment TEXT NOT NULL,
    origin TEXT NOT NULL,
    events INTEGER NOT NULL,
    unpriced_events INTEGER NOT NULL,
    cost TEXT,
    input_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    PRIMARY KEY ({grain}, tenant, feature, agent, model, provider, operation, environment, origin)
) WITHOUT ROWID;
"""


SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS ledger_events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    time_us INTEGER NOT NULL,
    day TEXT NOT NULL,
    tenant TEXT NOT NULL,
    feature TEXT NOT NULL,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    environment TEXT NOT NULL,
    origin TEXT NOT NULL,
    run_id TEXT,
    priced INTEGER NOT NULL,
    cost TEXT,
    unpriced_reason TEXT,
    price_version TEXT,
    input_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_events_time ON ledger_events (time_us);
CREATE INDEX IF NOT EXISTS ledger_events_unpriced ON ledger_events (time_us) WHERE priced = 0;
-- A tenant's events by time: (tenant, time_us, seq) of the events up to the seq in
-- ``ledger_meta.tenants_indexed_to``, filled in bulk (``index_tenants``) instead of per event as an
-- index on ledger_events would be. An index's entries land at each tenant's own place, so every
-- batch dirtied a 32 KiB page per tenant it touched (~20% of ``write`` with 500 tenants); a bulk fill
-- dirties each page once per fill. Queries read the events past that seq from ledger_events
-- itself (``tenant_seqs``), so a tenant's reads are exact whether or not the fill has run.
-- (Ledgers made before 2026-12-07 had the index ``ledger_events_tenant_time`` instead: the first
-- open moves its entries here and drops it.)
CREATE TABLE IF NOT EXISTS ledger_tenant_index (
    tenant TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, time_us, seq)
) WITHOUT ROWID;

{_rollup_table("ledger_rollups", "day")}
-- The same totals per calendar month ("YYYY-MM" in ``month``): a month-long breakdown reads one
-- row per key instead of ~30. Maintained in the same transaction as ledger_rollups.
{_rollup_table("ledger_rollups_month", "month")}
-- The same totals per UTC hour ("YYYY-MM-DDTHH" in ``hour``) of the events up to the seq in
-- ``ledger_meta.hours_rolled_to``: a window given with times of day reads its whole hours here, plus
-- the events past that seq and the minutes left at its ends from the events. ``maintain`` (the
-- writer, when idle) rolls events up in seq order, so writing an event costs nothing here.
{_rollup_table("ledger_rollups_hour", "hour")}
-- ``hours_rolled_to``: the seq up to which every event is counted in ledger_rollups_hour;
-- ``tenants_indexed_to``: the seq up to which every event is in ledger_tenant_index.
CREATE TABLE IF NOT EXISTS ledger_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ledger_runs (
    run_id TEXT PRIMARY KEY,
    parent_run_id TEXT,
    root_run_id TEXT,
    tenant_id TEXT,
    agent TEXT,
    events INTEGER NOT NULL,
    unpriced_events INTEGER NOT NULL,
    cost TEXT,
    first_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_runs_parent ON ledger_runs (parent_run_id);
CREATE INDEX IF NOT EXISTS ledger_runs_root ON ledger_runs (root_run_id);

CREATE TABLE IF NOT EXISTS ledger_adjustments (
    seq INTEGER PRIMARY KEY,
    adjustment_id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    price_version TEXT NOT NULL,
    priced INTEGER NOT NULL,
    cost TEXT,
    previous_cost TEXT,
    delta TEXT NOT NULL,
    unpriced_reason TEXT
);
CREATE INDEX IF NOT EXISTS ledger_adjustments_event ON ledger_adjustments (event_id);

-- Effective rating of adjusted events (derived from ledger_adjustments, like the rollups).
CREATE TABLE IF NOT EXISTS ledger_event_state (
    event_id TEXT PRIMARY KEY,
    priced INTEGER NOT NULL,
    cost TEXT,
    price_version TEXT,
    unpriced_reason TEXT,
    adjustments INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ledger_rejects (
    digest BLOB PRIMARY KEY,
    time_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


def dadd(left: str | None, right: str | None) -> str | None:
    """``outlay_dadd``: the exact sum of two decimal TEXT values, ``NULL`` (None) for none. Where
    the speedups were built, a compiled copy runs instead and hands here what it does not cover."""
    if left is None:
        return right
    if right is None:
        return left
    return money_str(MONEY_CONTEXT.add(Decimal(left), Decimal(right)))


class DecimalSum:
    """``outlay_dsum``: exact sum of decimal TEXT values; NULL when every value is NULL. Where the
    speedups were built, a compiled copy runs instead and hands here what it does not cover."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: str | None) -> None:
        if value is not None:
            amount = Decimal(value)
            self.total = amount if self.total is None else MONEY_CONTEXT.add(self.total, amount)

    def finalize(self) -> str | None:
        return None if self.total is None else money_str(self.total)


def register_functions(connection: sqlite3.Connection) -> None:
    connection.create_function("outlay_dadd", 2, dadd, deterministic=True)
    connection.create_function("outlay_hour", 1, hour_of, deterministic=True)
    # typeshed types aggregate values as int; ours are TEXT, which SQLite passes as str.
    connection.create_aggregate("outlay_dsum", 1, cast(Any, DecimalSum))


# -- statements --------------------------------------------------------------------------------

# The optional text columns (run_id, cost, unpriced_reason, price_version) are bound as '' for
# "absent" and stored as NULL: Python's sqlite3 binds str, int and bytearray directly but sends None,
# bool and bytes through its adapter registry first (~0.3 us each), and this runs once per event.
# No value is lost: ids and versions are non-empty, a cost is a number, and an empty reason is none.
INSERT_EVENT: Final = (
    "INSERT INTO ledger_events VALUES (NULL"
    + ", ?" * 11
    + ", NULLIF(?, ''), ?, NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, '')"
    + ", ?" * 6
    + ") ON CONFLICT (event_id) DO NOTHING"
)
TOKENS: Final = "input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens"
SUMS: Final = ", ".join(f"SUM({name})" for name in TOKENS.split(", "))
UPSERT_ROLLUP: Final = f"""
INSERT INTO ledger_rollups (tenant, day, feature, agent, model, provider, operation, environment, origin,
    events, unpriced_events, cost, {TOKENS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, tenant, feature, agent, model, provider, operation, environment, origin) DO UPDATE SET
    events = events + excluded.events,
    unpriced_events = unpriced_events + excluded.unpriced_events,
    cost = outlay_dadd(cost, excluded.cost),
    input_tokens = input_tokens + excluded.input_tokens,
    cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens
"""
UPSERT_MONTH: Final = (
    UPSERT_ROLLUP.replace("ledger_rollups", "ledger_rollups_month")
    .replace("(tenant, day,", "(tenant, month,")
    .replace("(day, tenant,", "(month, tenant,")
)
UPSERT_HOUR: Final = (
    UPSERT_ROLLUP.replace("ledger_rollups", "ledger_rollups_hour")
    .replace("(tenant, day,", "(tenant, hour,")
    .replace("(day, tenant,", "(hour, tenant,")
)
UPSERT_RUN: Final = """
INSERT INTO ledger_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    -- a link (no events) places only runs known so far as links, roots excepted: a run with events
    -- of its own has its place from them (another tenant's run_path cannot graft it elsewhere)
    parent_run_id = CASE WHEN excluded.events = 0 AND (events > 0 OR root_run_id = run_id)
        THEN parent_run_id
        ELSE COALESCE(parent_run_id, excluded.parent_run_id) END,
    root_run_id = CASE WHEN excluded.events = 0 AND (events > 0 OR root_run_id = run_id)
        THEN root_run_id
        ELSE COALESCE(root_run_id, excluded.root_run_id) END,
    -- '' (SEVERAL_TENANTS) once another tenant's events join; an adjustment or a link (no events)
    -- changes nothing; a run known only as a link (no events yet) takes its first events' tenant
    tenant_id = CASE WHEN excluded.events = 0 OR tenant_id IS excluded.tenant_id THEN tenant_id
        WHEN events = 0 THEN excluded.tenant_id ELSE '' END,
    agent = COALESCE(agent, excluded.agent),
    events = events + excluded.events,
    unpriced_events = unpriced_events + excluded.unpriced_events,
    cost = outlay_dadd(cost, excluded.cost),
    first_us = MIN(first_us, excluded.first_us),
    last_us = MAX(last_us, excluded.last_us)
"""
# The effective rating of an event: its latest adjustment (ledger_event_state) or its own.
EFFECTIVE: Final = """
    COALESCE(s.priced, e.priced) AS eff_priced,
    CASE WHEN s.event_id IS NULL THEN e.cost ELSE s.cost END AS eff_cost,
    CASE WHEN s.event_id IS NULL THEN e.price_version ELSE s.price_version END AS eff_version,
    CASE WHEN s.event_id IS NULL THEN e.unpriced_reason ELSE s.unpriced_reason END AS eff_reason,
    COALESCE(s.adjustments, 0) AS eff_adjustments
"""
FROM_EVENTS: Final = "ledger_events e LEFT JOIN ledger_event_state s ON s.event_id = e.event_id"
# Rolls up the events ``? < seq <= ?`` into the hour rollups, at their effective rating. (``WHERE
# true``: an upsert's SELECT needs a WHERE clause, or SQLite would read ON CONFLICT as a join.)
ROLL_UP_HOURS: Final = f"""
INSERT INTO ledger_rollups_hour (hour, tenant, feature, agent, model, provider, operation, environment,
    origin, events, unpriced_events, cost, {TOKENS})
SELECT outlay_hour(e.time_us), e.tenant, e.feature, e.agent, e.model, e.provider, e.operation, e.environment,
    e.origin, COUNT(*), SUM(1 - eff_priced), outlay_dsum(eff_cost), {SUMS}
FROM (SELECT e.*, {EFFECTIVE} FROM {FROM_EVENTS} WHERE e.seq > ? AND e.seq <= ?) e
WHERE true
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
{UPSERT_ROLLUP[UPSERT_ROLLUP.index("ON CONFLICT") :].replace("(day, tenant,", "(hour, tenant,")}"""
ROLLED_TO: Final = "SELECT value FROM ledger_meta WHERE name = 'hours_rolled_to'"
SET_ROLLED_TO: Final = (
    "INSERT INTO ledger_meta VALUES ('hours_rolled_to', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
# At most this many events wait past ``tenants_indexed_to``: ``write`` fills the index when more
# do (the writer's idle upkeep does it sooner), so a tenant's read scans at most this many rows.
TENANT_TAIL: Final = 100_000
INDEXED_TO: Final = "SELECT value FROM ledger_meta WHERE name = 'tenants_indexed_to'"
SET_INDEXED_TO: Final = SET_ROLLED_TO.replace("hours_rolled_to", "tenants_indexed_to")
# Indexes the events ``? < seq <= ?`` by tenant (sorted, so each page of the index is written once).
INDEX_TENANTS: Final = (
    "INSERT OR IGNORE INTO ledger_tenant_index"
    " SELECT tenant, time_us, seq FROM ledger_events WHERE seq > ? AND seq <= ? ORDER BY 1, 2, 3"
)
# ``tenants_indexed_to`` inside a statement (0 before the first fill).
INDEXED_SEQ: Final = f"COALESCE(({INDEXED_TO}), 0)"


def tenant_seqs(condition: str) -> str:
    """A query of the seqs of one tenant's events that meet ``condition`` (on ``time_us`` and
    ``seq``, unqualified): from ledger_tenant_index up to ``tenants_indexed_to``, from the events
    themselves past it. Its parameters: the tenant and ``condition``'s, twice. One statement, so
    both parts read the same state however the fill moves."""
    return (
        f"SELECT seq FROM ledger_tenant_index WHERE tenant = ? AND {condition}"
        # NOT INDEXED: the seq range (bounded by TENANT_TAIL), never the time index over a window
        f" UNION ALL SELECT seq FROM ledger_events NOT INDEXED"
        f" WHERE seq > {INDEXED_SEQ} AND tenant = ? AND {condition}"
    )


def filters(
    where: list[str],
    params: list[Any],
    prefix: str,
    *,
    environment: str | None,
    tenant: str | None,
    unattributed: bool,
) -> None:
    if environment is not None:
        where.append(f"{prefix}environment = ?")
        params.append(environment)
    if tenant is not None:
        where.append(f"{prefix}tenant = ?")
        params.append(tenant)
    if unattributed:
        where.append(f"{prefix}tenant = ''")


def totals(rows: list[Any], width: int) -> list[Totals]:
    out = []
    for row in rows:
        if not row[width]:  # an aggregate over no rows (no GROUP BY) still returns one row
            continue
        key = tuple(None if value in ("", None) else value for value in row[:width])
        out.append(
            Totals(
                key,
                row[width],
                row[width + 1],
                None if row[width + 2] is None else Decimal(row[width + 2]),
                *row[width + 3 :],
            )
        )
    return out
