"""Event log: durable append latency (group commit) and batched append throughput.

    python bench/bench_eventlog.py [--quick] [--dir DIR]

Payloads are real encoded cost events (CloudEvents JSON from ``outlay.events``, ~700 bytes).
The SQLite file goes in ``--dir`` (default: a temporary directory): put it on the disk you mean to
measure, since every durable append is an fsync (``synchronous=FULL``). Figures:

- durable append, 1 thread: one ``SQLiteEventLog.append([event])`` per call, timed per call.
- durable append, 8 threads: 8 threads calling ``append`` at once; their calls share transactions
  and fsyncs (group commit), so per-call latency stays near one fsync while throughput multiplies.
- batched: ``BatchingAppender`` (max_events=1000, max_delay=50 ms) fed from one thread, until
  ``flush()`` returns: events/s that are durable at the end.
- direct batches: ``append`` of 1000 events per call from one thread (what the appender does).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from outlay._usage import Usage
from outlay.events import CostEvent, encode_event
from outlay.stream import BatchingAppender, InMemoryEventLog, SQLiteEventLog


def make_payload(i: int) -> bytes:
    event = CostEvent(
        tenant_id=f"tenant-{i % 500:04d}",
        workspace_id="ws-support",
        user_id=f"user-{i % 9000}",
        feature="support-triage",
        request_id=f"req-{i:012d}",
        run_id=f"run-{i // 4:010d}",
        agent="triage-agent",
        operation="chat",
        provider="openai",
        model="gpt-4o-mini",
        usage=Usage(input_tokens=1834, cache_read_tokens=512, output_tokens=211),
        latency_ms=812.4,
        cost=Decimal("0.000412"),
        priced=True,
        price_version="genai-prices-0.2.3",
        unit_prices={"input_mtok": Decimal("0.15"), "output_mtok": Decimal("0.6")},
    )
    return encode_event(event)


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    samples_ns.sort()
    p50 = statistics.median(samples_ns) / 1e3
    p99 = samples_ns[min(len(samples_ns) - 1, int(len(samples_ns) * 0.99))] / 1e3
    return p50, p99


def durable_appends(path: Path, payloads: list[bytes], threads: int) -> tuple[float, float, float]:
    """(p50 us, p99 us, events/s) of single-event appends from ``threads`` threads at once."""
    log = SQLiteEventLog(path)
    log.append(payloads[:50])  # warm-up: schema, page cache
    per_thread = len(payloads) // threads
    samples: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def producer(t: int) -> None:
        mine = payloads[t * per_thread : (t + 1) * per_thread]
        start.wait()
        for payload in mine:
            began = time.perf_counter_ns()
            log.append([payload])
            samples[t].append(time.perf_counter_ns() - began)

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    log.close()
    p50, p99 = percentiles([s for thread in samples for s in thread])
    return p50, p99, per_thread * threads / elapsed


def batched(log_path: Path | None, payloads: list[bytes]) -> float:
    """events/s through a BatchingAppender, durable at the end (flush)."""
    log = SQLiteEventLog(log_path) if log_path else InMemoryEventLog()
    appender = BatchingAppender(log, max_events=1000, max_delay=0.05, max_buffer=20_000)
    began = time.perf_counter()
    for payload in payloads:
        appender.append([payload])
    appender.flush()
    elapsed = time.perf_counter() - began
    appender.close()
    log.close()
    return len(payloads) / elapsed


def direct_batches(path: Path, payloads: list[bytes], size: int = 1000) -> float:
    log = SQLiteEventLog(path)
    began = time.perf_counter()
    for i in range(0, len(payloads), size):
        log.append(payloads[i : i + size])
    elapsed = time.perf_counter() - began
    log.close()
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the SQLite files")
    args = parser.parse_args()
    n_durable, n_batched = (500, 20_000) if args.quick else (3000, 200_000)
    payloads = [make_payload(i) for i in range(n_batched)]
    size = statistics.mean(len(p) for p in payloads[:1000])

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        where = Path(tmp)
        rows = []
        p50, p99, rate = durable_appends(where / "d1.db", payloads[:n_durable], threads=1)
        rows.append(("durable append, 1 thread", f"{p50:,.0f}", f"{p99:,.0f}", f"{rate:,.0f}"))
        p50, p99, rate = durable_appends(where / "d8.db", payloads[: n_durable * 4], threads=8)
        rows.append(
            ("durable append, 8 threads (group commit)", f"{p50:,.0f}", f"{p99:,.0f}", f"{rate:,.0f}")
        )
        rate = direct_batches(where / "direct.db", payloads)
        rows.append(("append(1000 events) per call, 1 thread", "", "", f"{rate:,.0f}"))
        rate = batched(where / "batched.db", payloads)
        rows.append(("BatchingAppender -> SQLite, then flush", "", "", f"{rate:,.0f}"))
        rate = batched(None, payloads)
        rows.append(("BatchingAppender -> InMemoryEventLog", "", "", f"{rate:,.0f}"))

    print(f"event log benchmark: payload {size:.0f} bytes (encoded CostEvent), files in {args.dir or 'tmp'}")
    header = ("what", "p50 us", "p99 us", "events/s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
