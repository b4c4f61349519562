"""Schema, migrations and statements of the PostgreSQL ledger.

Everything lives in one schema (``outlay`` by default), so a database can hold several ledgers and
the tests can use a throwaway schema each. Statements are templates with ``{s}`` for the quoted
schema name: the name is validated against :data:`SCHEMA_NAME` before it is ever substituted.

Design notes (why, not what):

- Money is unconstrained ``NUMERIC``: exact at any scale, so an 18-decimal price times a token count
  sums without rounding; psycopg hands it back as ``Decimal``. ``NULL`` means "no priced event" and
  the upserts keep it so (``COALESCE(a + b, a, b)``): unknown never becomes zero.
- ``events`` is partitioned by month on ``time``. A unique index on a partitioned table must
  contain the partition key, so ``event_id`` uniqueness lives in the plain ``event_ids`` table,
  which every write inserts into first (``ON CONFLICT DO NOTHING RETURNING``) to learn which events
  are new. It also keeps each event's ``time``, so lookups by id prune to one partition.
- Dimension columns hold ``''`` for an absent value (as in SQLite) so the rollup primary keys are
  plain keys; text is ``COLLATE "C"``: byte order is fast, locale independent, and matches the
  order Python sorts ``str`` in, which the deadlock-free lock ordering relies on.
- Writes stage rows in session temp tables (``ON COMMIT DELETE ROWS``) filled with binary COPY,
  then move them with ``INSERT ... SELECT ... ORDER BY`` so concurrent writers lock rows in one
  global order and never deadlock.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Final

__all__ = [
    "DELTA_FROM_STAGING",
    "DELTA_TYPES",
    "DIMENSIONS",
    "INSERT_ADJUSTMENT",
    "INSERT_EVENTS",
    "INSERT_IDS",
    "LOCK_MIGRATIONS",
    "LOCK_PARTITIONS",
    "MIGRATIONS",
    "MONTHS_FROM_DELTA",
    "ROLLUPS_FROM_DELTA",
    "ROLLUP_KEY",
    "RUNS_FROM_DELTA",
    "RUN_DELTA_TYPES",
    "SCHEMA_NAME",
    "STAGING",
    "STAGING_COLUMNS",
    "STAGING_TYPES",
    "TOKENS",
    "UPSERT_EVENT_STATE",
    "partition_ddl",
]

#: Schema names accepted for ``PostgresLedger(schema=...)``: plain lower-case identifiers.
SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Advisory-lock class ids (first half of the two-int key; the second is ``hashtext(schema)``).
LOCK_MIGRATIONS: Final = 0x6F75_0001
LOCK_PARTITIONS: Final = 0x6F75_0002

TOKENS: Final = "input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens"
DIMENSIONS: Final = "tenant, feature, agent, model, provider, operation, environment, origin"
#: Primary-key order of the rollups; also the ORDER BY of every upsert (one global lock order).
ROLLUP_KEY: Final = f"day, {DIMENSIONS}"

_DIM_COLUMNS: Final = ",\n".join(f'    {name} text COLLATE "C" NOT NULL' for name in DIMENSIONS.split(", "))
_TOKEN_COLUMNS: Final = ",\n".join(f"    {name} bigint NOT NULL" for name in TOKENS.split(", "))


def _rollup_table(name: str, grain: str) -> str:
    return f"""
CREATE TABLE {{s}}.{name} (
    {grain} date NOT NULL,
{_DIM_COLUMNS},
    events bigint NOT NULL,
    unpriced_events bigint NOT NULL,
    cost numeric,
{_TOKEN_COLUMNS},
    PRIMARY KEY ({grain}, {DIMENSIONS})
) WITH (fillfactor = 70);  -- room on each page for HOT updates: an upsert then rewrites no index"""


# Version 1: the whole ledger. A later change is a new (version, name, sql) entry, never an edit.
_V1: Final = f"""
CREATE SEQUENCE {{s}}.events_seq CACHE 1000;
CREATE TABLE {{s}}.events (
    seq bigint NOT NULL DEFAULT nextval('{{s}}.events_seq'),
    event_id text COLLATE "C" NOT NULL,
    time timestamptz NOT NULL,
    day date NOT NULL,
{_DIM_COLUMNS},
    run_id text COLLATE "C",
    priced boolean NOT NULL,
    cost numeric,
    unpriced_reason text,
    price_version text,
{_TOKEN_COLUMNS},
    payload bytea NOT NULL
) PARTITION BY RANGE (time);
CREATE INDEX events_time ON {{s}}.events (time, seq);
CREATE INDEX events_unpriced ON {{s}}.events (time) WHERE NOT priced;

CREATE TABLE {{s}}.event_ids (
    event_id text COLLATE "C" PRIMARY KEY,
    time timestamptz NOT NULL
);
{_rollup_table("rollups", "day")}
{_rollup_table("rollups_month", "month")}

CREATE TABLE {{s}}.runs (
    run_id text COLLATE "C" PRIMARY KEY,
    parent_run_id text COLLATE "C",
    root_run_id text COLLATE "C",
    tenant_id text COLLATE "C",
    agent text COLLATE "C",
    events bigint NOT NULL,
    unpriced_events bigint NOT NULL,
    cost numeric,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX runs_parent ON {{s}}.runs (parent_run_id);
CREATE INDEX runs_root ON {{s}}.runs (root_run_id);

CREATE TABLE {{s}}.adjustments (
    seq bigserial PRIMARY KEY,
    adjustment_id text COLLATE "C" NOT NULL UNIQUE,
    event_id text COLLATE "C" NOT NULL,
    time timestamptz NOT NULL,
    price_version text NOT NULL,
    priced boolean NOT NULL,
    cost numeric,
    previous_cost numeric,
    delta numeric NOT NULL,
    unpriced_reason text
);
CREATE INDEX adjustments_event ON {{s}}.adjustments (event_id);

-- Effective rating of adjusted events, derived from adjustments like the rollups are.
CREATE TABLE {{s}}.event_state (
    event_id text COLLATE "C" PRIMARY KEY,
    priced boolean NOT NULL,
    cost numeric,
    price_version text,
    unpriced_reason text,
    adjustments integer NOT NULL
);

CREATE TABLE {{s}}.rejects (
    digest bytea PRIMARY KEY,
    time timestamptz NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX rejects_time ON {{s}}.rejects (time);
"""

#: ``(version, name, sql)`` in order; applied once each, recorded in ``schema_migrations``.
MIGRATIONS: Final[list[tuple[int, str, str]]] = [
    (1, "ledger tables", _V1),
    # One tenant's events of a window (exports, audit, the event list) without reading everyone's.
    (2, "events by tenant and time", "CREATE INDEX events_tenant_time ON {s}.events (tenant, time, seq);"),
    # Events at one instant are listed (and paged, docs/api.md) in seq order. A session's cache of
    # 1,000 seqs gave a later write on another connection smaller seqs than an earlier one's, so it
    # sorted before events already paged past, and a client paging /events never saw it.
    (3, "seq in recording order across connections", "ALTER SEQUENCE {s}.events_seq CACHE 1;"),
]

# -- per-session staging tables -----------------------------------------------------------------

STAGING_COLUMNS: Final = (
    f"event_id, time, {DIMENSIONS}, run_id, parent_run_id, root_run_id, priced, cost, unpriced_reason,"
    f" price_version, {TOKENS}, payload, ordinal"
)
#: Binary COPY needs the type of each staged column, in ``STAGING_COLUMNS`` order.
STAGING_TYPES: Final = (
    ["text", "timestamptz"]
    + ["text"] * 11
    + ["bool", "numeric", "text", "text"]
    + ["int8"] * 5
    + ["bytea", "int8"]
)
DELTA_TYPES: Final = ["date"] + ["text"] * 8 + ["int8", "int8", "numeric"] + ["int8"] * 5
RUN_DELTA_TYPES: Final = ["text"] * 5 + ["int8", "int8", "numeric", "timestamptz", "timestamptz"]
# temp_buffers must be set before the session first touches a temp table; 64 MB holds a
# 20,000-event batch with its payloads without spilling to disk. The ledger's days and months are
# UTC: its sessions read in UTC too, whatever TimeZone the URL's options or the server set, so the
# times it hands back (adjustments, rejects) are UTC, as from the other ledgers.
STAGING: Final = f"""
SET temp_buffers = '64MB';
SET TimeZone = 'UTC';
CREATE TEMP TABLE IF NOT EXISTS outlay_staging (
    event_id text COLLATE "C" NOT NULL,
    time timestamptz NOT NULL,
    day date GENERATED ALWAYS AS ((time AT TIME ZONE 'UTC')::date) STORED,
{_DIM_COLUMNS},
    run_id text COLLATE "C",
    parent_run_id text COLLATE "C",
    root_run_id text COLLATE "C",
    priced boolean NOT NULL,
    cost numeric,
    unpriced_reason text,
    price_version text,
{_TOKEN_COLUMNS},
    payload bytea NOT NULL,
    ordinal bigint NOT NULL  -- the event's place in its batch: COPY does not keep the rows' order
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS outlay_delta (
    day date NOT NULL,
{_DIM_COLUMNS},
    events bigint NOT NULL,
    unpriced_events bigint NOT NULL,
    cost numeric,
{_TOKEN_COLUMNS}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS outlay_run_delta (
    run_id text COLLATE "C" NOT NULL,
    parent_run_id text COLLATE "C",
    root_run_id text COLLATE "C",
    tenant_id text COLLATE "C",
    agent text COLLATE "C",
    events bigint NOT NULL,
    unpriced_events bigint NOT NULL,
    cost numeric,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
"""

# -- statements -----------------------------------------------------------------------------------

#: Claims the staged ids; ``ORDER BY`` makes overlapping concurrent batches lock ids in one order.
INSERT_IDS: Final = """
INSERT INTO {s}.event_ids (event_id, time)
SELECT event_id, time FROM pg_temp.outlay_staging ORDER BY event_id
ON CONFLICT (event_id) DO NOTHING RETURNING event_id
"""
INSERT_EVENTS: Final = f"""
INSERT INTO {{s}}.events (event_id, time, day, {DIMENSIONS}, run_id, priced, cost, unpriced_reason,
    price_version, {TOKENS}, payload)
SELECT event_id, time, day, {DIMENSIONS}, run_id, priced, cost, unpriced_reason, price_version,
    {TOKENS}, payload
FROM pg_temp.outlay_staging
ORDER BY ordinal  -- seq follows the recording order: ties at one instant keep it (docs/api.md)
"""
_TOKEN_SUMS: Final = ", ".join(f"sum({name})" for name in TOKENS.split(", "))
_ADD: Final = ",\n    ".join(
    f"{name} = r.{name} + excluded.{name}" for name in ("events", "unpriced_events", *TOKENS.split(", "))
)


def _upsert_rollups(table: str, grain: str, source: str) -> str:
    # Rows arrive in primary-key order (``source`` sorts them): one global lock order, no deadlocks.
    return f"""
INSERT INTO {{s}}.{table} AS r ({grain}, {DIMENSIONS}, events, unpriced_events, cost, {TOKENS})
{source}
ON CONFLICT ({grain}, {DIMENSIONS}) DO UPDATE SET
    {_ADD},
    cost = COALESCE(r.cost + excluded.cost, r.cost, excluded.cost)
"""


#: A batch's new events, aggregated per rollup key in SQL into the delta table: one pass over the
#: batch; the day and month upserts then read the (smaller) delta table.
DELTA_FROM_STAGING: Final = f"""
INSERT INTO pg_temp.outlay_delta ({ROLLUP_KEY}, events, unpriced_events, cost, {TOKENS})
SELECT {ROLLUP_KEY}, count(*), count(*) FILTER (WHERE NOT priced), sum(cost), {_TOKEN_SUMS}
FROM pg_temp.outlay_staging GROUP BY {ROLLUP_KEY}
"""
# The delta table holds one row per key (from DELTA_FROM_STAGING or from Python's RollupDeltas).
ROLLUPS_FROM_DELTA: Final = _upsert_rollups(
    "rollups",
    "day",
    f"SELECT {ROLLUP_KEY}, events, unpriced_events, cost, {TOKENS}"
    f" FROM pg_temp.outlay_delta ORDER BY {ROLLUP_KEY}",
)
MONTHS_FROM_DELTA: Final = _upsert_rollups(
    "rollups_month",
    "month",
    f"SELECT date_trunc('month', day)::date, {DIMENSIONS}, sum(events), sum(unpriced_events), sum(cost),"
    f" {_TOKEN_SUMS} FROM pg_temp.outlay_delta GROUP BY 1, {DIMENSIONS} ORDER BY 1, {DIMENSIONS}",
)


def _upsert_runs(source: str) -> str:
    return f"""
INSERT INTO {{s}}.runs AS r
{source}
ON CONFLICT (run_id) DO UPDATE SET
    -- a link (no events) places only runs known so far as links, roots excepted: a run with events
    -- of its own has its place from them (another tenant's run_path cannot graft it elsewhere)
    parent_run_id = CASE WHEN excluded.events = 0 AND (r.events > 0 OR r.root_run_id = r.run_id)
        THEN r.parent_run_id
        ELSE COALESCE(r.parent_run_id, excluded.parent_run_id) END,
    root_run_id = CASE WHEN excluded.events = 0 AND (r.events > 0 OR r.root_run_id = r.run_id)
        THEN r.root_run_id
        ELSE COALESCE(r.root_run_id, excluded.root_run_id) END,
    -- '' (SEVERAL_TENANTS) once another tenant's events join; an adjustment or a link (no events)
    -- changes nothing; a run known only as a link (no events yet) takes its first events' tenant
    tenant_id = CASE WHEN excluded.events = 0 OR r.tenant_id IS NOT DISTINCT FROM excluded.tenant_id
        THEN r.tenant_id WHEN r.events = 0 THEN excluded.tenant_id ELSE '' END,
    agent = COALESCE(r.agent, excluded.agent),
    events = r.events + excluded.events,
    unpriced_events = r.unpriced_events + excluded.unpriced_events,
    cost = COALESCE(r.cost + excluded.cost, r.cost, excluded.cost),
    first_at = LEAST(r.first_at, excluded.first_at),
    last_at = GREATEST(r.last_at, excluded.last_at)
"""


RUNS_FROM_DELTA: Final = _upsert_runs("SELECT * FROM pg_temp.outlay_run_delta ORDER BY run_id")
INSERT_ADJUSTMENT: Final = """
INSERT INTO {s}.adjustments (adjustment_id, event_id, time, price_version, priced, cost, previous_cost,
    delta, unpriced_reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
UPSERT_EVENT_STATE: Final = """
INSERT INTO {s}.event_state VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (event_id) DO UPDATE SET priced = excluded.priced, cost = excluded.cost,
    price_version = excluded.price_version, unpriced_reason = excluded.unpriced_reason,
    adjustments = excluded.adjustments
"""


def partition_ddl(month: date, name: str | None = None) -> tuple[str, str]:
    """The name (``events_YYYY_MM`` unless ``name`` is given) and ``CREATE TABLE IF NOT EXISTS`` of
    the partition of the month of ``month``."""
    first = month.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    name = name or f"events_{first.year:04d}_{first.month:02d}"
    # Bounds in UTC explicitly, whatever the session's TimeZone setting is.
    ddl = (
        f"CREATE TABLE IF NOT EXISTS {{s}}.{name} PARTITION OF {{s}}.events"
        f" FOR VALUES FROM ('{first.isoformat()} 00:00:00+00') TO ('{following.isoformat()} 00:00:00+00')"
    )
    return name, ddl
