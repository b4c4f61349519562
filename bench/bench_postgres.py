"""PostgreSQL ledger benchmarks: sustained ingestion (COPY batches) and breakdowns from rollups.

    python bench/bench_postgres.py                         # 500k ingested, 1M-event ledger queried
    python bench/bench_postgres.py --events 10000000       # breakdowns over 10M events
    python bench/bench_postgres.py --ingest 1000000 --batch 20000 --writers 2 --events 0
    python bench/bench_postgres.py --url postgresql://postgres@127.0.0.1:5432/test --keep

The workload is the one of bench/bench_ledger.py (500 tenants over 30 days, 3% unpriced, 4%
unattributed, costs with up to 24 decimals), so the SQLite and PostgreSQL figures compare.
Ingestion is ``PostgresLedger.write`` with the payloads the log already holds (what the writer
does after decoding) and the whole ``LedgerWriter`` step (decode + write + ack). ``--writers N``
runs N writer processes on disjoint slices at once and reports the aggregate rate. Each run
writes into a fresh schema, dropped afterwards; the query ledger's schema is kept with ``--keep``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta

import psycopg
from bench_ledger import START, make_events

from outlay.events import encode_event
from outlay.ledger import LedgerWriter
from outlay.ledger._postgres import PostgresLedger
from outlay.reporting import Reports
from outlay.stream import InMemoryEventLog


def _drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _write_slice(url: str, schema: str, count: int, seed: int, batch: int, barrier: object) -> float:
    events = make_events(count, seed=seed)
    payloads = [encode_event(e) for e in events]
    ledger = PostgresLedger(url, schema=schema)
    ledger.write(events[:1], payloads[:1])  # connect and create partitions outside the timing
    barrier.wait()  # type: ignore[attr-defined]
    began = time.perf_counter()
    for at in range(1, len(events), batch):
        ledger.write(events[at : at + batch], payloads[at : at + batch])
    elapsed = time.perf_counter() - began
    ledger.close()
    return elapsed


def bench_write(url: str, count: int, batch: int, writers: int) -> float:
    schema = f"bench_ingest_{writers}"
    _drop(url, schema)
    PostgresLedger(url, schema=schema).close()
    per = count // writers
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(writers)
        with multiprocessing.Pool(writers) as pool:
            elapsed = pool.starmap(
                _write_slice, [(url, schema, per, 7 + i, batch, barrier) for i in range(writers)]
            )
    with PostgresLedger(url, schema=schema) as ledger:
        assert ledger.event_count() == per * writers, "an event went missing"
    _drop(url, schema)
    return (per - 1) * writers / max(elapsed)


def bench_writer(url: str, count: int, batch: int) -> float:
    payloads = [encode_event(e) for e in make_events(count, seed=3)]
    log = InMemoryEventLog()
    for at in range(0, len(payloads), 10_000):
        log.append(payloads[at : at + 10_000])
    schema = "bench_writer"
    _drop(url, schema)
    ledger = PostgresLedger(url, schema=schema)
    began = time.perf_counter()
    stats = LedgerWriter(log, ledger, batch_size=batch).catch_up()
    elapsed = time.perf_counter() - began
    ledger.close()
    _drop(url, schema)
    assert stats.inserted == len(payloads)
    return len(payloads) / elapsed


def build(url: str, schema: str, total: int, batch: int) -> None:
    ledger = PostgresLedger(url, schema=schema)
    have = ledger.event_count()
    chunk = 200_000
    began = time.perf_counter()
    for seed, at in enumerate(range(have, total, chunk), start=100):
        events = make_events(min(chunk, total - at), seed=seed)
        payloads = [encode_event(e) for e in events]
        for i in range(0, len(events), batch):
            ledger.write(events[i : i + batch], payloads[i : i + batch])
        print(f"  built {at + len(events):,} events ({time.perf_counter() - began:.0f} s)", flush=True)
    ledger.close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'ANALYZE "{schema}".rollups, "{schema}".rollups_month')


def _timed(call: Callable[[], object], repeats: int) -> tuple[object, list[float]]:
    timings, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - began) * 1000)
    return result, timings


def bench_queries(url: str, schema: str, repeats: int) -> None:
    ledger = PostgresLedger(url, schema=schema)
    reports = Reports(ledger)
    print(f"ledger: {ledger.event_count():,} events in schema {schema}")
    windows = {
        "month (Mar 1 - Apr 1)": (START.date(), date(2026, 4, 1)),
        "days (Mar 3 - Mar 29)": (date(2026, 3, 3), date(2026, 3, 29)),
        "to the second": (
            START + timedelta(days=2, hours=13),
            START + timedelta(days=28, hours=6, seconds=1),
        ),
    }
    for label, (start, end) in windows.items():
        for by in ("tenant", "tenant,model", "feature,agent", "provider,model,environment", "day"):
            rows, timings = _timed(lambda: reports.breakdown(by, start, end), repeats)  # noqa: B023
            print(
                f"{label:<22} breakdown --by {by:<27} {len(rows):>6} rows"  # type: ignore[arg-type]
                f"  median {statistics.median(timings):7.1f} ms  max {max(timings):7.1f} ms"
            )
    _, timings = _timed(lambda: reports.concentration(START.date(), date(2026, 4, 1)), repeats)
    print(f"concentration, month: median {statistics.median(timings):.1f} ms")
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--ingest", type=int, default=500_000, help="events for the ingestion runs")
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size for the queries (0: skip)")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=1, help="writer processes for the ingestion run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the query ledger's schema")
    args = parser.parse_args()

    if args.ingest:
        for _ in range(2):
            rate = bench_write(args.url, args.ingest, args.batch, args.writers)
            print(
                f"PostgresLedger.write, batch {args.batch}, {args.writers} writer(s):"
                f" {rate:,.0f} events/s ({args.ingest:,} events)",
                flush=True,
            )
        rate = bench_writer(args.url, min(args.ingest, 200_000), args.batch)
        print(f"LedgerWriter (decode + write + ack), batch {args.batch}: {rate:,.0f} events/s", flush=True)
    if args.events:
        schema = f"bench_query_{args.events}"
        build(args.url, schema, args.events, args.batch)
        try:
            bench_queries(args.url, schema, args.repeats)
        finally:
            if not args.keep:
                _drop(args.url, schema)


if __name__ == "__main__":
    main()
