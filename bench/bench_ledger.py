"""Ledger benchmarks: sustained ingestion into the SQLite ledger, and breakdown queries from rollups.

    python bench/bench_ledger.py                       # 200k ingested, 1M-event ledger queried
    python bench/bench_ledger.py --events 10000000     # the DESIGN target: breakdown over 10M events
    python bench/bench_ledger.py --ingest 500000 --events 0 --batch 5000
    python bench/bench_ledger.py --ingest 100000 --events 0 --floor   # + the lower bound of the layout
    python bench/bench_ledger.py --ingest 200000 --events 0 --batch 50000 --ingest-days 1 --chunked
    python bench/bench_ledger.py --ingest 400000 --events 0 --batch 40000 --ingest-days 1 --processes 2
    python bench/bench_ledger.py --ingest 200000 --events 0 --batch 50000 --ingest-days 1   # live
    python bench/bench_ledger.py --ingest 40000 --events 0 --batch 40000 --ingest-days 1 --busy-thread
    OUTLAY_NO_SPEEDUPS=1 python bench/bench_ledger.py ...   # rows built in Python, not C

The workload is shaped like a real platform: 500 tenants over 30 days, each using a handful of
(feature, agent, model) combinations, 95% production, 3% unpriced, 4% unattributed, costs with up
to 24 decimals. The ingested events span 30 days too unless ``--ingest-days`` says otherwise: a
sparse spread, where nearly every event of a batch lands on a rollup row of its own (3,000 day keys
per 5,000 events); live ingestion — events of the last hours, ``--ingest-days 1`` — lands many
events of a batch on each rollup row, the more so the bigger the batch. Ingestion is measured two
ways: ``LedgerStore.write`` with the payloads the log already holds (what the writer does after
decoding), and the whole ``LedgerWriter`` step (CloudEvents decode + write + ack) from an
in-memory log.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from outlay._usage import Usage
from outlay.events import CostEvent, decode_event, encode_event
from outlay.ledger import LedgerWriter, SQLiteLedger, speedups
from outlay.ledger._sqlite import compiled_inserts
from outlay.ledger._sqlite_schema import INDEX_TENANTS, INDEXED_TO, SET_INDEXED_TO
from outlay.reporting import Reports
from outlay.stream import InMemoryEventLog

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 30
MODELS = (
    ("openai", "gpt-4o", Decimal("0.0000025"), "chat"),
    ("openai", "gpt-4o-mini", Decimal("0.00000015"), "chat"),
    ("openai", "text-embedding-3-small", Decimal("0.00000002"), "embedding"),
    ("anthropic", "claude-sonnet-4", Decimal("0.000003"), "chat"),
    ("anthropic", "claude-haiku-4", Decimal("0.000000800000000000000001"), "chat"),
    ("google", "gemini-2.5-pro", Decimal("0.00000125"), "chat"),
    ("google", "gemini-2.5-flash", Decimal("0.000000018750000000"), "chat"),
    ("mistral", "mistral-large", Decimal("0.000002"), "chat"),
)
FEATURES = tuple(f"feature-{i}" for i in range(20))


def make_events(count: int, seed: int = 1, days: float = DAYS) -> list[CostEvent]:
    # Each tenant uses the same four (feature, agent, model) combinations in every chunk of the
    # build, as real products do: the rollup cardinality is that of the product, not of the seed.
    shape = random.Random(0)
    combos = {
        t: [(shape.choice(FEATURES), f"agent-{shape.randrange(6)}", shape.choice(MODELS)) for _ in range(4)]
        for t in range(500)
    }
    rng = random.Random(seed)
    span = int(days * 86_400_000_000)
    events = []
    for i in range(count):
        tenant = rng.randrange(500)
        feature, agent, (provider, model, price, operation) = rng.choice(combos[tenant])
        tokens = rng.randrange(1, 20_000)
        priced = rng.random() >= 0.03
        attributed = rng.random() >= 0.04
        events.append(
            CostEvent(
                time=START + timedelta(microseconds=span * i // count),
                tenant_id=f"tenant-{tenant:03}" if attributed else None,
                attribution="attributed" if attributed else "unattributed",
                origin=None if attributed else f"job-{tenant % 7}",
                feature=feature,
                agent=agent,
                environment="production" if rng.random() < 0.95 else "staging",
                run_id=f"run-{i // 8}",
                operation=operation,
                provider=provider,
                model=model,
                usage=Usage(input_tokens=tokens, output_tokens=tokens // 10),
                priced=priced,
                cost=price * tokens if priced else None,
                unpriced_reason=None if priced else f"no price for {provider}/{model}",
                price_version="genai-prices-0.2.3",
            )
        )
    return events


def bench_write(
    path: Path, events: list[CostEvent], payloads: list[bytes], batch: int
) -> tuple[float, float]:
    """Events per second of ``write``, and of ``write`` plus filling the tenant index for the
    events it left waiting (``write`` fills it itself only past ``TENANT_TAIL``; the writer fills
    it when idle): the second covers all the work an index kept per insert used to do."""
    ledger = SQLiteLedger(path)
    began = time.perf_counter()
    for at in range(0, len(events), batch):
        ledger.write(events[at : at + batch], payloads[at : at + batch])
    elapsed = time.perf_counter() - began
    began = time.perf_counter()
    with ledger._transaction() as cursor:
        indexed = cursor.execute(INDEXED_TO).fetchone()
        top = cursor.execute("SELECT MAX(seq) FROM ledger_events").fetchone()[0]
        cursor.execute(INDEX_TENANTS, (0 if indexed is None else indexed[0], top))
        cursor.execute(SET_INDEXED_TO, (top,))
    filled = time.perf_counter() - began
    ledger.close()
    return len(events) / elapsed, len(events) / (elapsed + filled)


@contextmanager
def busy_thread() -> Iterator[None]:
    """Another thread running Python meanwhile, as an app recording in the writer's process does: a
    writer that takes the GIL back after every row waits a switch interval (5 ms) each time."""
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def bench_writer(path: Path, payloads: list[bytes], batch: int, processes: int = 1) -> float:
    log = InMemoryEventLog()
    for at in range(0, len(payloads), 10_000):
        log.append(payloads[at : at + 10_000])
    ledger = SQLiteLedger(path)
    writer = LedgerWriter(log, ledger, batch_size=batch, processes=processes)
    if writer._processes is not None:
        writer._processes._start()  # (their interpreters start before the clock does)
    began = time.perf_counter()
    stats = writer.catch_up()
    elapsed = time.perf_counter() - began
    writer.close()
    ledger.close()
    assert stats.inserted == len(payloads)
    return len(payloads) / elapsed


def bench_decode(payloads: list[bytes], repeats: int = 5) -> float:
    """Microseconds of CPU per ``decode_event`` (best of ``repeats``): the writer's other half."""
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        for payload in payloads:
            decode_event(payload)
        best = min(best, time.process_time() - began)
    return best / len(payloads) * 1e6


def bench_floor(workdir: Path, events: list[CostEvent], payloads: list[bytes], batch: int) -> None:
    """What any row-per-event layout costs at least, measured apart: building the rows and rollup
    deltas in Python exactly as ``SQLiteLedger.write`` does, and inserting the same rows into a
    table with the same columns but no index, no uniqueness check and no rollups (durable commits
    per batch, as the ledger's). Their sum bounds ``write`` from below."""
    from outlay.ledger._sqlite import event_rows
    from outlay.ledger._sqlite_schema import INSERT_EVENT, SCHEMA

    def rows_of(chunk: list[CostEvent], chunk_payloads: list[bytes]) -> list[tuple[object, ...]]:
        return event_rows(chunk, chunk_payloads, {event.event_id: i for i, event in enumerate(chunk)})[0]

    began = time.process_time()
    spans = range(0, len(events), batch)
    chunks = [rows_of(events[at : at + batch], payloads[at : at + batch]) for at in spans]
    build_us = (time.process_time() - began) / len(events) * 1e6
    table = SCHEMA[: SCHEMA.index("CREATE INDEX")].replace("event_id TEXT NOT NULL UNIQUE", "event_id TEXT")
    insert = INSERT_EVENT[: INSERT_EVENT.index(" ON CONFLICT")]
    print(f"floor: building rows + rollup deltas in Python: {build_us:.1f} us CPU per event")
    for label, keep_payload in (("with", True), ("without", False)):
        path = workdir / f"floor-{label}.db"
        path.unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(table)
        began = time.perf_counter()
        for rows in chunks:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(insert, rows if keep_payload else [(*r[:-1], b"") for r in rows])
            db.execute("COMMIT")
        insert_us = (time.perf_counter() - began) / len(events) * 1e6
        db.close()
        print(
            f"floor: insert into a bare table (no index, no rollups), {label} the payload: {insert_us:.1f} us"
            f" per event; with the row building: {1e6 / (insert_us + build_us):,.0f} events/s at most"
        )


def bench_chunked(workdir: Path, events: list[CostEvent], payloads: list[bytes], batch: int) -> None:
    """The write path of the layout ``--floor`` points to, measured apart (nothing reads it back):
    events stored in chunks, one row per (tenant, day) of a batch holding the events' columns
    (orjson) and their payloads side by side, one slim ``event_id -> chunk`` row per event for
    idempotency, and the ledger's own day/month/run rollups, in one durable transaction per batch.
    It bounds what chunked storage would gain before any read path is written for it."""
    import gc

    import orjson

    from outlay.ledger._rows import RollupDeltas, day_of, rollup_key, time_us, tokens_of

    path = workdir / "chunked.db"
    path.unlink(missing_ok=True)
    ledger = SQLiteLedger(path)  # the ledger's pragmas, rollup tables and background checkpoints
    db = ledger._connection()
    db.executescript(
        "CREATE TABLE ids (event_id TEXT PRIMARY KEY, chunk INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE chunks (chunk INTEGER PRIMARY KEY, day TEXT NOT NULL, tenant TEXT NOT NULL,"
        " events INTEGER NOT NULL, cols BLOB NOT NULL, payloads BLOB NOT NULL);"
        "CREATE INDEX chunks_day ON chunks (day); CREATE INDEX chunks_tenant ON chunks (tenant, day);"
    )
    parts = {"build rows, chunks and rollup deltas": 0.0, "insert ids and chunks": 0.0, "rollups": 0.0}
    parts["commit"] = 0.0
    began = time.perf_counter()
    for at in range(0, len(events), batch):
        chunk_events, chunk_payloads = events[at : at + batch], payloads[at : at + batch]
        gc.disable()  # as SQLiteLedger.write does
        t0 = time.perf_counter()
        first = {event.event_id: i for i, event in reversed(list(enumerate(chunk_events)))}
        deltas = RollupDeltas()
        groups: dict[tuple[str, ...], tuple[list[object], list[bytes], list[str]]] = {}
        for event_id, index in first.items():
            event = chunk_events[index]
            us = time_us(event.time)
            key = rollup_key(event, day_of(us))
            tokens = tokens_of(event)
            deltas.add_event(event, key, us, tokens)
            cost = event.cost
            group = groups.get(key[:2])
            if group is None:
                group = groups[key[:2]] = ([], [], [])
            group[0].append(
                (event_id, us, key[2:], event.run_id, None if cost is None else format(cost, "f"),
                 event.unpriced_reason, event.price_version, tokens)
            )  # fmt: skip
            group[1].append(chunk_payloads[index])
            group[2].append(event_id)
        db.execute("BEGIN IMMEDIATE")
        last = db.execute("SELECT COALESCE(MAX(chunk), 0) FROM chunks").fetchone()[0]
        rows, ids = [], []
        for number, ((tenant, day), (cols, blobs, event_ids)) in enumerate(groups.items(), last + 1):
            rows.append((number, day, tenant, len(cols), orjson.dumps(cols), b"".join(blobs)))
            ids += [(event_id, number) for event_id in event_ids]
        t1 = time.perf_counter()
        db.executemany("INSERT INTO ids VALUES (?, ?) ON CONFLICT DO NOTHING", ids)
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)
        t2 = time.perf_counter()
        ledger._apply(db.cursor(), deltas)
        t3 = time.perf_counter()
        db.execute("COMMIT")
        gc.enable()
        t4 = time.perf_counter()
        for name, spent in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name] += spent
    rate = len(events) / (time.perf_counter() - began)
    size = path.stat().st_size / len(events)
    ledger.close()
    split = ", ".join(f"{name} {spent / len(events) * 1e6:.1f}" for name, spent in parts.items())
    print(f"chunked (write path only): {rate:,.0f} events/s; us per event: {split}; {size:.0f} B per event")


def build(path: Path, total: int, batch: int) -> None:
    ledger = SQLiteLedger(path)
    have = ledger.event_count()
    chunk = 200_000
    began = time.perf_counter()
    for seed, at in enumerate(range(have, total, chunk), start=100):
        events = make_events(min(chunk, total - at), seed=seed)
        payloads = [encode_event(e) for e in events]
        for i in range(0, len(events), batch):
            ledger.write(events[i : i + batch], payloads[i : i + batch])
        print(f"  built {at + len(events):,} events ({time.perf_counter() - began:.0f} s)", flush=True)
    # What the writer does when idle: roll the events up by hour (windows with times of day).
    began, steps = time.perf_counter(), 0
    while ledger.maintain():
        steps += 1
    if steps:
        elapsed = time.perf_counter() - began
        print(f"  hour roll-up ({steps} steps): {elapsed:.1f} s, {total / elapsed:,.0f} events/s", flush=True)
    ledger.close()


def _timed(call: Callable[[], object], repeats: int) -> tuple[object, list[float]]:
    timings, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - began) * 1000)
    return result, timings


def bench_queries(path: Path, repeats: int) -> None:
    ledger = SQLiteLedger(path)
    reports = Reports(ledger)
    print(f"ledger: {ledger.event_count():,} events, {path.stat().st_size / 1e9:.2f} GB")
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
    parser.add_argument("--ingest", type=int, default=200_000, help="events for the ingestion runs")
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size for the queries (0: skip)")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--ingest-days", type=float, default=DAYS, help="time spread of the ingested events, in days"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", help="keep the ledgers here (the query ledger is reused if present)")
    parser.add_argument(
        "--floor", action="store_true", help="also measure the lower bound of any row-per-event layout"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="also run the writer with 2..N writer processes"
    )
    parser.add_argument(
        "--chunked", action="store_true", help="also measure the write path of a chunked event layout"
    )
    parser.add_argument(
        "--busy-thread",
        action="store_true",
        help="also measure write while another thread of the process is busy in Python (an app's)",
    )
    args = parser.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="outlay-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    if args.ingest:
        # OUTLAY_NO_SPEEDUPS=1 measures the pure-Python rows (what an install without a compiler runs)
        print(
            f"rows built in {'C (outlay.ledger._speedups)' if speedups() else 'Python'},"
            f" inserted by {'insert_rows (C)' if compiled_inserts() else 'executemany'}"
        )
        events = make_events(args.ingest, days=args.ingest_days)
        payloads = [encode_event(e) for e in events]
        for run in range(2):
            ingest = workdir / f"ingest-{run}.db"
            ingest.unlink(missing_ok=True)
            rate, indexed = bench_write(ingest, events, payloads, args.batch)
            print(
                f"SQLiteLedger.write, batch {args.batch}: {rate:,.0f} events/s ({args.ingest:,} events);"
                f" {indexed:,.0f} with the tenant index filled"
            )
        if args.busy_thread:
            with busy_thread():
                ingest.unlink(missing_ok=True)
                rate, indexed = bench_write(ingest, events, payloads, args.batch)
            print(
                f"SQLiteLedger.write beside a thread busy in Python: {rate:,.0f} events/s;"
                f" {indexed:,.0f} with the tenant index filled"
            )
        writer_db = workdir / "writer.db"
        writer_db.unlink(missing_ok=True)
        rate = bench_writer(writer_db, payloads, args.batch)
        print(f"LedgerWriter (decode + write + ack), batch {args.batch}: {rate:,.0f} events/s")
        for processes in range(2, args.processes + 1):
            writer_db.unlink(missing_ok=True)
            rate = bench_writer(writer_db, payloads, args.batch, processes)
            print(f"LedgerWriter, {processes} processes, batch {args.batch}: {rate:,.0f} events/s")
        print(f"CloudEvents decode: {bench_decode(payloads[:20_000]):.1f} us CPU per event (best of 5)")
        if args.floor:
            bench_floor(workdir, events, payloads, args.batch)
        if args.chunked:
            bench_chunked(workdir, events, payloads, args.batch)
    if args.events:
        query_db = workdir / f"query-{args.events}.db"
        build(query_db, args.events, args.batch)
        bench_queries(query_db, args.repeats)


if __name__ == "__main__":
    main()
