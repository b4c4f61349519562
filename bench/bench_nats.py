"""Event log on NATS JetStream: append, consume, and end to end (append + consume at once).

    python bench/bench_nats.py [--quick] [--url nats://127.0.0.1:4222] [--events N]
                               [--producers P] [--consumers C] [--batch B]

Payloads are real encoded cost events (CloudEvents JSON, ~700 bytes, 500 tenants), built before
timing starts. Each figure uses a fresh stream (file storage, deleted afterwards). Producers and
consumers are separate processes, as in a deployment (gateways append, workers consume):

- append: P producer processes, ``append(B events)`` per call (pipelined publishes, every PubAck
  awaited, Nats-Msg-Id set), until every event is acknowledged by JetStream.
- consume: C consumer processes sharing one durable consumer, ``read(B)`` then ``ack`` (every
  record acknowledged explicitly, confirmed by the server) until the stream is consumed.
- end to end: both at once; the clock runs from the first append until the consumers have
  acknowledged the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path

import nats

from outlay._usage import Usage
from outlay.events import CostEvent, encode_event
from outlay.stream import NatsEventLog


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


def producer(
    url: str,
    stream: str,
    prefix: str,
    first: int,
    count: int,
    batch: int,
    start: Barrier,
    cpu: Synchronized[float],
) -> None:
    payloads = [make_payload(i) for i in range(first, first + count)]
    with NatsEventLog(url, stream=stream, subject_prefix=prefix) as log:
        start.wait()
        began = time.process_time()
        for i in range(0, count, batch):
            log.append(payloads[i : i + batch])
        with cpu.get_lock():
            cpu.value += time.process_time() - began


def consumer(
    url: str,
    stream: str,
    prefix: str,
    total: int,
    batch: int,
    start: Barrier,
    done: Synchronized[int],
    cpu: Synchronized[float],
) -> None:
    with NatsEventLog(url, stream=stream, subject_prefix=prefix) as log:
        log.register("bench")
        start.wait()
        began = time.process_time()
        while done.value < total:
            records = log.read("bench", max_records=batch, timeout=0.1)
            if records:
                log.ack("bench", records[-1].offset)
                with done.get_lock():
                    done.value += len(records)
        with cpu.get_lock():
            cpu.value += time.process_time() - began


def server_cpu(url: str) -> float | None:
    """CPU seconds used so far by the nats-server listening on ``url``'s port (Linux), if found."""
    port = url.rsplit(":", 1)[-1].strip("/")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            if not args[0].endswith(b"nats-server"):
                continue
            ports = [args[i + 1] for i, a in enumerate(args[:-1]) if a in (b"-p", b"--port")]
            if (ports[0].decode() if ports else "4222") != port:
                continue
            fields = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return None


@dataclass
class Result:
    rate: float  # events/s, wall clock
    cpu_us: dict[str, float]  # CPU microseconds per event: producers, consumers, nats-server


def run(
    url: str, events: int, producers: int, consumers: int, batch: int, *, produce: bool, consume: bool
) -> Result:
    """One scenario on a fresh stream."""
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"BENCH_{tag}", f"outlay.bench.{tag}"
    ctx = mp.get_context("spawn")
    per = events // producers
    total = per * producers
    done = ctx.Value("q", 0)
    produce_cpu, consume_cpu = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    try:
        if not produce:  # consume only: fill the stream first, untimed
            fill = ctx.Barrier(producers)
            procs = [
                ctx.Process(
                    target=producer, args=(url, stream, prefix, p * per, per, batch, fill, produce_cpu)
                )
                for p in range(producers)
            ]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
        parties = (producers if produce else 0) + (consumers if consume else 0) + 1
        start = ctx.Barrier(parties)
        procs = []
        if produce:
            procs += [
                ctx.Process(
                    target=producer, args=(url, stream, prefix, p * per, per, batch, start, produce_cpu)
                )
                for p in range(producers)
            ]
        if consume:
            procs += [
                ctx.Process(
                    target=consumer, args=(url, stream, prefix, total, batch, start, done, consume_cpu)
                )
                for _ in range(consumers)
            ]
        for proc in procs:
            proc.start()
        start.wait()
        server_before = server_cpu(url)
        began = time.perf_counter()
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                sys.exit(f"a benchmark process failed (exit code {proc.exitcode})")
        elapsed = time.perf_counter() - began
        server_after = server_cpu(url)
        cpu = {}
        if produce:
            cpu["producers"] = produce_cpu.value / total * 1e6
        if consume:
            cpu["consumers"] = consume_cpu.value / total * 1e6
        if server_before is not None and server_after is not None:
            cpu["nats-server"] = (server_after - server_before) / total * 1e6
        return Result(total / elapsed, cpu)
    finally:
        delete(url, stream)


def delete(url: str, stream: str) -> None:
    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    args = parser.parse_args()
    events = args.events or (20_000 if args.quick else 200_000)
    repeat = 1 if args.quick else args.repeat
    load = os.getloadavg()[0]
    rows = []
    for name, produce, consume in (
        ("append (PubAck awaited)", True, False),
        ("consume (read + ack)", False, True),
        ("end to end (append + consume at once)", True, True),
    ):
        results = [
            run(
                args.url, events, args.producers, args.consumers, args.batch, produce=produce, consume=consume
            )
            for _ in range(repeat)
        ]
        best = sorted(results, key=lambda r: r.rate)[len(results) // 2]
        cpu = ", ".join(f"{who} {us:.0f}" for who, us in best.cpu_us.items())
        rows.append((name, f"{best.rate:,.0f}", ", ".join(f"{r.rate:,.0f}" for r in results), cpu))
    size = statistics.mean(len(make_payload(i)) for i in range(200))
    print(
        f"NATS JetStream event log: {events:,} events of {size:.0f} bytes, {args.producers} producer(s),"
        f" {args.consumers} consumer(s), batch {args.batch}, server {args.url}, {os.cpu_count()} CPUs,"
        f" load average at start {load:.2f}"
    )
    header = ("what", "events/s (median)", "runs", "CPU us/event (median run)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(
            "  ".join(
                str(c).ljust(w) if i != 1 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
