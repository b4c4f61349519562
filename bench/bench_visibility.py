"""Event -> visible in totals: how long after ``record`` returns an event is counted by the ledger.

    python bench/bench_visibility.py                    # every deployment, 1k and 5k events/s of load
    python bench/bench_visibility.py --quick            # a smoke run (seconds)
    python bench/bench_visibility.py --deployments nats-postgres --workers 1,2 --rates 5000 --repeat 3
    python bench/bench_visibility.py --nats nats://127.0.0.1:4222 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test --probes 500 --probe-rate 20

Deployments (``--deployments``, comma-separated):

- ``sqlite-worker``: ``outlay.configure(<tmp>/outlay.db)``, the embedded SQLite event log and ledger;
  the ledger writer is one ``outlay worker`` process (``--batch-size``, default the worker's 5000).
- ``sqlite-inprocess``: the same home and no worker: the runtime has no background writer thread;
  ``outlay.reports()`` catches the ledger up in the calling process before it answers, so a probe
  is counted in the first report asked for; the figure is how long that report takes under load.
- ``nats-postgres``: ``OUTLAY_STREAM_URL=nats://...?stream=<unique>`` and
  ``OUTLAY_LEDGER_URL=postgresql://...?schema=<unique>``, with ``--workers`` (default 1,2) ``outlay
  worker`` processes sharing the durable consumer. The stream and the schema are deleted afterwards.

Load: a separate process appends ``--rates`` events/s to the deployment's event log, one append every
10 ms (pre-encoded cost events with fresh ids, 100 tenants, environment ``production``), the way a
batching gateway would. Probes: every ``1/--probe-rate`` s (jittered ±50 %), ``outlay.record_tool``
under ``outlay.attribute(tenant=<unique>, environment="test")`` with an exact cost; a poller thread
asks the ledger's ``rollup_totals`` (what the reports read) every ``--poll`` s until the probe's
tenant shows one event of that cost. The latency runs from ``record`` returning (the event is
durable in the log) to the end of the first query that counts it: an upper bound, by at most one
poll interval plus one query. A probe not counted within ``--timeout`` s is reported as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import uuid_utils

import outlay
from outlay._usage import Usage
from outlay.events import CostEvent, encode_event
from outlay.ledger import LedgerStore, open_ledger
from outlay.stream import open_event_log

DEPLOYMENTS: Final = ("sqlite-worker", "sqlite-inprocess", "nats-postgres")
PROBE_COST: Final = Decimal("0.001234567890123456")
PLACEHOLDER: Final = "00000000-0000-7000-8000-000000000000"
LOAD_TICK: Final = 0.01  # the load process appends once per tick
LOAD_TENANTS: Final = 100
WORKER_BATCH: Final = 5000  # `outlay worker --batch-size` default
FEW: Final = 8  # up to this many probes waiting: one query per tenant; more: one query for all


# -- load ------------------------------------------------------------------------------------------


def _templates() -> list[bytes]:
    """One encoded event per load tenant, timed now, with ``PLACEHOLDER`` where the id goes."""
    now = datetime.now(UTC)
    out = []
    for k in range(LOAD_TENANTS):
        event = CostEvent(
            event_id=PLACEHOLDER,
            time=now,
            tenant_id=f"load-{k:03d}",
            workspace_id="ws-support",
            user_id=f"user-{k % 37}",
            feature=("support-triage", "research", "summaries")[k % 3],
            agent="triage-agent",
            run_id=f"run-{k:06d}",
            environment="production",
            operation="chat",
            provider="openai",
            model=("gpt-4o-mini", "gpt-4o")[k % 2],
            usage=Usage(input_tokens=1834, cache_read_tokens=512, output_tokens=211),
            latency_ms=812.4,
            cost=Decimal("0.000412"),
            priced=True,
            price_version="bench",
        )
        payload = encode_event(event)
        assert payload.count(PLACEHOLDER.encode()) == 1, "the event id must appear once in the payload"
        out.append(payload)
    return out


def load_process(stream_url: str, rate: int, stop: Event, started: Event, sent: Synchronized[int]) -> None:
    """Append ``rate`` events/s until ``stop``; a schedule it cannot keep is dropped, not queued."""
    log = open_event_log(stream_url)
    marker = PLACEHOLDER.encode()
    try:
        templates = _templates()
        refreshed = time.perf_counter()
        began = refreshed
        scheduled = done = 0
        started.set()
        while not stop.is_set():
            now = time.perf_counter()
            target = int((now - began) * rate)
            due = min(target - scheduled, max(1, rate // 10))  # at most 100 ms worth in one append
            scheduled = target
            if due > 0:
                log.append(
                    [
                        templates[(done + i) % LOAD_TENANTS].replace(marker, str(uuid_utils.uuid7()).encode())
                        for i in range(due)
                    ]
                )
                done += due
                sent.value = done
            if now - refreshed >= 1.0:  # keep event times current (today's rollups)
                templates, refreshed = _templates(), now
            time.sleep(max(0.0, LOAD_TICK - (time.perf_counter() - now)))
    finally:
        log.close()


# -- probes ----------------------------------------------------------------------------------------


@dataclass
class Probe:
    tenant: str
    recorded: float  # perf_counter() when record returned
    record_s: float  # how long record took
    visible_s: float | None = None  # record returned -> first query that counts it


def _days() -> tuple[date, date]:
    today = datetime.now(UTC).date()
    return today - timedelta(days=1), today + timedelta(days=2)


class Poller:
    """Polls the ledger's rollups for the probes waiting to be counted (a thread of its own)."""

    def __init__(self, ledger: LedgerStore, interval: float, timeout: float) -> None:
        self.ledger = ledger
        self.interval = interval
        self.timeout = timeout
        self.waiting: dict[str, Probe] = {}
        self.lost: list[Probe] = []
        self.queries = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="visibility-poller", daemon=True)
        self._thread.start()

    def add(self, probe: Probe) -> None:
        with self._lock:
            self.waiting[probe.tenant] = probe

    def _counted(self, tenants: list[str]) -> set[str]:
        start, end = _days()
        self.queries += 1
        if len(tenants) <= FEW:
            seen = set()
            for tenant in tenants:
                rows = self.ledger.rollup_totals(("tenant",), start, end, environment="test", tenant=tenant)
                if rows and rows[0].events == 1 and rows[0].cost == PROBE_COST:
                    seen.add(tenant)
            return seen
        rows = self.ledger.rollup_totals(("tenant",), start, end, environment="test")
        return {str(r.key[0]) for r in rows if r.events == 1 and r.cost == PROBE_COST}

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    tenants = list(self.waiting)
                if not tenants:
                    if self._closing.is_set():
                        return
                    time.sleep(self.interval)
                    continue
                began = time.perf_counter()
                seen = self._counted(tenants)
                now = time.perf_counter()
                with self._lock:
                    for tenant in tenants:
                        probe = self.waiting[tenant]
                        if tenant in seen:
                            probe.visible_s = now - probe.recorded
                        elif now - probe.recorded > self.timeout:
                            self.lost.append(probe)
                        else:
                            continue
                        del self.waiting[tenant]
                time.sleep(max(0.0, self.interval - (time.perf_counter() - began)))
        except BaseException as exc:
            self._error = exc

    def finish(self) -> None:
        """Wait until every probe is counted or lost."""
        self._closing.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"the poller failed: {self._error!r}") from self._error


def _record_probe(tenant: str) -> Probe:
    with outlay.attribute(tenant=tenant, environment="test"):
        began = time.perf_counter()
        outlay.record_tool("visibility-probe", 1, cost=PROBE_COST)
        done = time.perf_counter()
    return Probe(tenant, done, done - began)


def _pace(next_at: float, interval: float) -> float:
    pause = next_at - time.perf_counter()
    if pause > 0:
        time.sleep(pause)
    return next_at + interval * random.uniform(0.5, 1.5)


def probe_polled(ledger: LedgerStore, tag: str, count: int, args: argparse.Namespace) -> list[Probe]:
    """``count`` probes counted by a separate writer, found by polling ``ledger``."""
    poller = Poller(ledger, args.poll, args.timeout)
    probes = []
    next_at = time.perf_counter()
    for i in range(count):
        next_at = _pace(next_at, 1.0 / args.probe_rate)
        probe = _record_probe(f"probe-{tag}-{i:05d}")
        probes.append(probe)
        poller.add(probe)
    poller.finish()
    return probes


def probe_inprocess(tag: str, count: int, args: argparse.Namespace) -> list[Probe]:
    """``count`` probes counted by ``outlay.reports()`` catching the ledger up in this process."""
    start, end = (d.isoformat() for d in _days())
    probes = []
    next_at = time.perf_counter()
    for i in range(count):
        next_at = _pace(next_at, 1.0 / args.probe_rate)
        probe = _record_probe(f"probe-{tag}-{i:05d}")
        reports = outlay.reports()
        rows = reports.totals("tenant", start, end, tenant=probe.tenant, environment="test")
        if rows and rows[0].events == 1 and rows[0].cost == PROBE_COST:
            probe.visible_s = time.perf_counter() - probe.recorded
        probes.append(probe)
    return probes


# -- processes -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def workers(count: int, env: dict[str, str], home: Path, batch_size: int) -> Iterator[list[int]]:
    """``count`` ``outlay worker`` processes; SIGTERM on exit, and a failed one is an error."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(count):
            logfile = home / f"worker-{i}.log"
            with logfile.open("wb") as out:
                command = [sys.executable, "-m", "outlay.cli", "worker", "--batch-size", str(batch_size)]
                procs.append((subprocess.Popen(command, env=env, cwd=home, stdout=out, stderr=out), logfile))
        yield [proc.pid for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, logfile in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                sys.exit(f"an outlay worker failed (exit {proc.returncode}):\n{logfile.read_text()[-3000:]}")


@contextmanager
def load(stream_url: str, rate: int) -> Iterator[Synchronized[int]]:
    """The load process, running (and appending) inside the block."""
    ctx = mp.get_context("spawn")
    stop, started = ctx.Event(), ctx.Event()
    sent = ctx.Value("q", 0)
    proc = ctx.Process(target=load_process, args=(stream_url, rate, stop, started, sent), daemon=True)
    proc.start()
    try:
        while not started.wait(0.1):
            if not proc.is_alive():
                sys.exit(f"the load process failed to start (exit {proc.exitcode})")
        yield sent
    finally:
        stop.set()
        proc.join(30)
        if proc.exitcode != 0:
            sys.exit(f"the load process failed (exit {proc.exitcode})")


def drop_stream(nats_url: str, stream: str) -> None:
    import nats

    async def go() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(go())


def drop_schema(postgres_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- one scenario ----------------------------------------------------------------------------------


@dataclass
class Result:
    deployment: str
    workers: int
    rate: int
    achieved: float
    probes: list[Probe]
    lost: int
    writer_cpu: float | None  # % of one core, writer processes together (or this process in-process)
    load_average: float
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted here)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def scenario(deployment: str, worker_count: int, rate: int, args: argparse.Namespace) -> Result:
    tag = uuid.uuid4().hex[:10]
    home = Path(tempfile.mkdtemp(prefix="outlay-vis-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAY_")}
    stream = schema = None
    try:
        if deployment == "nats-postgres":
            stream, schema = f"VIS_{tag}", f"bench_vis_{tag}"
            stream_url = f"{args.nats}?stream={stream}&subject_prefix=outlay.vis.{tag}"
            joiner = "&" if urlsplit(args.postgres).query else "?"
            ledger_url = f"{args.postgres}{joiner}schema={schema}"
            env.update(OUTLAY_STREAM_URL=stream_url, OUTLAY_LEDGER_URL=ledger_url)
            outlay.configure(home / "outlay.db", stream_url=stream_url, ledger_url=ledger_url)
        else:
            stream_url = str(home / "events.db")
            ledger_url = str(home / "outlay.db")
            env.update(OUTLAY_URL=ledger_url)
            outlay.configure(ledger_url)
        poll_ledger = open_ledger(ledger_url)  # creates (and migrates) the ledger before any worker
        try:
            count = worker_count if deployment != "sqlite-inprocess" else 0
            with workers(count, env, home, args.batch_size) as worker_pids:
                if count:  # the first probe waits for the workers to start
                    first = probe_polled(poll_ledger, f"{tag}-start", 1, _with(args, timeout=120.0))
                    if first[0].visible_s is None:
                        sys.exit(f"{deployment}: the workers counted nothing within 120 s")
                with load(stream_url, rate) as sent:
                    if count:
                        probe_polled(poll_ledger, f"{tag}-warm", args.warmup, args)
                    else:
                        probe_inprocess(f"{tag}-warm", args.warmup, args)
                    load_average = os.getloadavg()[0]
                    pids = worker_pids or [os.getpid()]
                    cpu_before = [cpu_seconds(pid) for pid in pids]
                    sent_before, began = sent.value, time.perf_counter()
                    if count:
                        probes = probe_polled(poll_ledger, tag, args.probes, args)
                    else:
                        probes = probe_inprocess(tag, args.probes, args)
                    elapsed = time.perf_counter() - began
                    achieved = (sent.value - sent_before) / elapsed
                    cpu_after = [cpu_seconds(pid) for pid in pids]
            used = [
                b - a for a, b in zip(cpu_before, cpu_after, strict=True) if a is not None and b is not None
            ]
            writer_cpu = 100 * sum(used) / elapsed if len(used) == len(pids) else None
        finally:
            poll_ledger.close()
            outlay.shutdown()
        lost = sum(1 for p in probes if p.visible_s is None)
        return Result(deployment, count, rate, achieved, probes, lost, writer_cpu, load_average)
    finally:
        if stream is not None:
            drop_stream(args.nats, stream)
        if schema is not None:
            drop_schema(args.postgres, schema)
        shutil.rmtree(home, ignore_errors=True)


def _with(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    copy = argparse.Namespace(**vars(args))
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


# -- command line ----------------------------------------------------------------------------------


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _deployments(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    unknown = [name for name in names if name not in DEPLOYMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown deployment {unknown}; choose from {', '.join(DEPLOYMENTS)}"
        )
    return names


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 events/s, 10 probes")
    parser.add_argument("--deployments", type=_deployments, default=list(DEPLOYMENTS))
    parser.add_argument("--rates", type=_positive_ints, default=None, help="load, events/s (1000,5000)")
    parser.add_argument("--workers", type=_positive_ints, default=None, help="nats-postgres workers (1,2)")
    parser.add_argument("--probes", type=int, default=None, help="probes per scenario (500)")
    parser.add_argument("--warmup", type=int, default=None, help="probes discarded first (20)")
    parser.add_argument("--probe-rate", type=_positive_float, default=20.0, help="probes/s (20)")
    parser.add_argument("--poll", type=_positive_float, default=0.01, help="poll interval, s (0.01)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0, help="a probe is lost after (30 s)")
    parser.add_argument("--batch-size", type=int, default=WORKER_BATCH, help="outlay worker --batch-size")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario (1)")
    parser.add_argument("--nats", default=os.environ.get("OUTLAY_TEST_NATS", "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OUTLAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args(argv)
    args.rates = args.rates or ([200] if args.quick else [1000, 5000])
    args.workers = args.workers or ([1] if args.quick else [1, 2])
    args.probes = args.probes if args.probes is not None else (10 if args.quick else 500)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 20)
    for name in ("probes", "batch_size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if "?" in args.nats:
        parser.error("--nats takes the server URL only; the bench picks its own stream")
    return args


def row(result: Result) -> list[str]:
    seen = [p.visible_s * 1000 for p in result.probes if p.visible_s is not None]
    recorded = [p.record_s * 1000 for p in result.probes]
    name = result.deployment + (f" x{result.workers}" if result.deployment == "nats-postgres" else "")
    cells = [
        name,
        f"{result.rate:,}",
        f"{result.achieved:,.0f}",
        f"{len(seen)}/{len(result.probes)}",
        f"{percentile(recorded, 0.5):.1f}",
    ]
    if seen:
        cells += [f"{percentile(seen, q):.0f}" for q in (0.5, 0.95, 0.99)] + [f"{max(seen):.0f}"]
    else:
        cells += ["-"] * 4
    cells += ["-" if result.writer_cpu is None else f"{result.writer_cpu:.0f}", f"{result.load_average:.1f}"]
    return cells


HEADER: Final = [
    "deployment",
    "load ev/s",
    "achieved",
    "counted",
    "record p50 ms",
    "visible p50 ms",
    "p95",
    "p99",
    "max",
    "writer CPU %",
    "load avg",
]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for cells in [HEADER, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"event -> visible in totals: {args.probes} probes at {args.probe_rate:g}/s per scenario"
        f" (+{args.warmup} warm-up), poll every {args.poll * 1000:g} ms, worker --batch-size"
        f" {args.batch_size}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    failed = False
    for deployment in args.deployments:
        counts = args.workers if deployment == "nats-postgres" else [1]
        for count in counts:
            for rate in args.rates:
                p99s = []
                for _ in range(args.repeat):
                    result = scenario(deployment, count, rate, args)
                    rows.append(row(result))
                    print("  ".join(rows[-1]), flush=True)
                    seen = [p.visible_s for p in result.probes if p.visible_s is not None]
                    failed |= result.lost > 0
                    if seen:
                        p99s.append(percentile(seen, 0.99) * 1000)
                if args.repeat > 1 and p99s:
                    print(f"  p99 over {args.repeat} runs: {min(p99s):.0f}-{max(p99s):.0f} ms", flush=True)
    print()
    print_table(rows)
    if failed:
        print("some probes were never counted (see 'counted')", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
