"""Dashboard benchmark: the finance page, a tenant's page and a tenant's CSV exports over a big ledger.

    python bench/bench_dashboard.py --ledger /work/bench-data/dash-10m.db --by-call  # build 10M once, reuse
    python bench/bench_dashboard.py --events 1000000          # a fresh 1M ledger in a temp dir, deleted after
    python bench/bench_dashboard.py --quick                   # 20k events: a smoke run (seconds)
    python bench/bench_dashboard.py --ledger PATH --pages finance,tenant --no-evict

The ledger is SQLite, written through ``SQLiteLedger.write`` one 200k-event chunk per transaction
(10M events: ~8.5 min, 9.4 GB on the project's VM). ``--ledger PATH`` keeps it and reuses it, topped
up to ``--events`` if it holds fewer; the embedded event log beside it (``events.db``) stays empty.
Without ``--ledger`` the ledger lives in a temporary directory, deleted at the end.

Shape: 200 tenants of Zipf-like size (the biggest ~9% of the events) over 76 days (2026-01-15 to
2026-04-01), each using 3-6 (feature, agent, model) combinations of 12 features, 8 agents and the 8
models of bench/bench_ledger.py (4 providers); 95% production; 0.5% unpriced; 2% unattributed
(nightly jobs); runs of 8 events. Eight tenants have a runaway day in February and one in March
(a spike) with budget decisions (denied, throttled) on those days; ``tenant-000``, the biggest, is
one of them, ``tenant-001`` (the ``tenant-quiet`` page) is not.

Each page is asked for through httpx's ASGI transport against ``create_app(Outlay(ledger), tokens=...)``
(in process, no network): ``cold`` is the first request of a new app and ``Outlay``, after the ledger
file was evicted from the OS page cache (``posix_fadvise(DONTNEED)`` on that file only; ``--no-evict``
keeps the cache), then ``--repeats`` warm requests (p50 and max). The ledger-entries CSV decodes every
event of the tenant-month (~23 s at 10M), so it gets ``--entries-repeats`` warm requests (default 0).
``--by-call`` adds, under each page, the time of each API call it makes. The load average is printed
with the table: other processes on the machine inflate the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ledger import MODELS  # the same providers, models and exact prices

from outlay import Outlay
from outlay._runtime import decision_event
from outlay._usage import Usage
from outlay.api import create_app
from outlay.budgets import Decision
from outlay.dashboard._context import Context
from outlay.events import CostEvent, encode_event
from outlay.ledger import SQLiteLedger

START = datetime(2026, 1, 15, tzinfo=UTC)
DAYS = 76  # to 2026-04-01: March is a whole month, the last of the ledger
TENANTS = 200
FEATURES = tuple(f"feature-{i}" for i in range(12))
AGENTS = tuple(f"agent-{i}" for i in range(8))
#: Tenants (by size rank) with a runaway day in February and in March, and budget decisions on it.
BURSTY = (0, 3, 10, 25, 50, 90, 140, 190)
CHUNK = 200_000
ADMIN = "bench-admin-token-0123456789"
MONTH = {"from": "2026-03-01", "to": "2026-04-01"}
THIRTY_DAYS = {"from": "2026-02-15", "to": "2026-03-17"}  # not month-aligned: daily rollups


def tenant_name(rank: int) -> str:
    return f"tenant-{rank:03d}"


def tenant_token(rank: int) -> str:
    return f"bench-{tenant_name(rank)}-token-0123456789"


def burst_days(rank: int) -> tuple[datetime, datetime]:
    k = BURSTY.index(rank)
    return (
        datetime(2026, 2, 1 + 3 * k, tzinfo=UTC),
        datetime(2026, 3, 1 + 3 * k, tzinfo=UTC),
    )


def _shape() -> tuple[list[int], dict[int, list[tuple[str, str, tuple[str, str, Decimal, str]]]]]:
    """A table to draw tenants from (rank r with weight 1/(r+1)^0.8) and each tenant's combinations:
    the rollup cardinality is that of the product, the same in every chunk."""
    shape = random.Random(0)
    weights = [1 / (r + 1) ** 0.8 for r in range(TENANTS)]
    scale = 20_000 / sum(weights)
    table = [r for r in range(TENANTS) for _ in range(max(1, round(weights[r] * scale)))]
    combos = {
        r: [
            (shape.choice(FEATURES), shape.choice(AGENTS), shape.choice(MODELS))
            for _ in range(shape.randint(3, 6))
        ]
        for r in range(TENANTS)
    }
    return table, combos


def decisions_per_tenant(count: int) -> int:
    """Budget decisions per runaway tenant in a chunk of ``count`` cost events (half on each bad day)."""
    return max(2, count // 50_000)


def make_events(count: int, seed: int) -> list[CostEvent]:
    """``count`` events spread over the whole span (plus ~1% on runaway days) and their decisions."""
    table, combos = _shape()
    rng = random.Random(seed)
    span = DAYS * 86_400_000_000
    events = []
    for i in range(count):
        rank = table[rng.randrange(len(table))]
        when = START + timedelta(microseconds=span * i // count)
        tokens = rng.randrange(1, 20_000)
        if rng.random() < 0.01:  # a runaway agent: big calls, all on one of its two bad days
            rank = rng.choice(BURSTY)
            when = rng.choice(burst_days(rank)) + timedelta(microseconds=rng.randrange(86_400_000_000))
            tokens *= 8
        feature, agent, (provider, model, price, operation) = rng.choice(combos[rank])
        priced = rng.random() >= 0.005
        attributed = rng.random() >= 0.02
        events.append(
            CostEvent(
                time=when,
                tenant_id=tenant_name(rank) if attributed else None,
                attribution="attributed" if attributed else "unattributed",
                origin=None if attributed else f"nightly-job-{rank % 5}",
                feature=feature,
                agent=agent,
                environment="production" if rng.random() < 0.95 else "staging",
                run_id=f"run-{seed}-{i // 8}",
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
    for rank in BURSTY:  # a few decisions per chunk on each runaway day: ~1,600 in a 10M ledger
        for n in range(decisions_per_tenant(count)):
            day = burst_days(rank)[n % 2]
            kind = "throttled" if n % 3 == 0 else "denied"
            amounts: dict[str, Any] = (
                {"retry_after": 2.0} if kind == "throttled" else {"limit": Decimal(50), "spent": Decimal(51)}
            )
            decision = Decision(
                kind=kind,
                message=f"{tenant_name(rank)} daily budget: {kind}",
                tenant=tenant_name(rank),
                time=day + timedelta(microseconds=rng.randrange(86_400_000_000)),
                run_id=f"run-{seed}-burst-{rank}-{n}",
                model=combos[rank][0][2][1],
                **amounts,
            )
            events.append(decision_event(decision))
    return events


def _expected(total: int) -> list[int]:
    """Events in the ledger after each chunk of a build of ``total`` cost events (with decisions)."""
    counts, have = [], 0
    for at in range(0, total, CHUNK):
        size = min(CHUNK, total - at)
        have += size + len(BURSTY) * decisions_per_tenant(size)
        counts.append(have)
    return counts


def build(path: Path, total: int) -> int:
    """Top the ledger at ``path`` up to ``total`` cost events, in chunks of 200k events each seeded by
    its position and written in one transaction, so an interrupted build resumes where it stopped.
    Returns the events now in the ledger."""
    ledger = SQLiteLedger(path)
    try:
        have, expected = ledger.event_count(), _expected(total)
        if have >= expected[-1]:
            return have
        if have and have not in expected:
            raise SystemExit(f"{path} holds {have:,} events, not a build of this benchmark: delete it")
        began = time.perf_counter()
        for chunk in range(expected.index(have) + 1 if have else 0, len(expected)):
            at = chunk * CHUNK
            events = make_events(min(CHUNK, total - at), seed=100 + chunk)
            ledger.write(events, [encode_event(e) for e in events])
            print(f"  built {expected[chunk]:,} events ({time.perf_counter() - began:.0f} s)", flush=True)
        return ledger.event_count()
    finally:
        ledger.close()


# -- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    key: str
    label: str
    url: str
    params: dict[str, str]
    token: str
    repeats: int | None = None  # None: --repeats


@dataclass
class Result:
    label: str
    status: int
    size: int
    cold: float
    warm: list[float]
    calls: dict[str, list[float]]


def evict(path: Path) -> None:
    """Drop the ledger's pages (only this file's) from the OS page cache: a cold read."""
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@contextmanager
def timed_calls() -> Iterator[dict[str, list[float]]]:
    """Time each API call the dashboard makes (``Context.api``), by path."""
    calls: dict[str, list[float]] = {}
    real = Context.api

    def api(self: Context, path: str, params: Any, **path_params: str) -> Any:
        began = time.perf_counter()
        try:
            return real(self, path, params, **path_params)
        finally:
            calls.setdefault(path, []).append(time.perf_counter() - began)

    Context.api = api  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        Context.api = real  # type: ignore[method-assign]


def tokens() -> list[dict[str, str]]:
    entries = [{"name": "finance", "token": ADMIN, "role": "admin"}]
    entries += [{"name": f"{tenant_name(r)}-app", "token": tenant_token(r), "tenant": tenant_name(r)}
                for r in range(TENANTS)]  # fmt: skip
    return entries


async def _measure(path: Path, probe: Probe, repeats: int, cold_cache: bool) -> Result:
    outlay = Outlay(str(path))
    app = create_app(outlay, tokens=tokens())
    headers = {"Authorization": f"Bearer {probe.token}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=None
        ) as client:
            if cold_cache:
                evict(path)
            timings, size, status = [], 0, 0
            with timed_calls() as calls:
                for run in range(1 + repeats):
                    if run == 1:
                        calls.clear()  # per-call figures are of the warm requests
                    began = time.perf_counter()
                    response = await client.get(probe.url, params=probe.params, headers=headers)
                    timings.append(time.perf_counter() - began)
                    size, status = len(response.content), response.status_code
                    if status != 200:
                        raise SystemExit(f"{probe.label}: HTTP {status}: {response.text[:500]}")
    finally:
        outlay.close()
    return Result(probe.label, status, size, timings[0], timings[1:], dict(calls))


def probes(entries_repeats: int) -> list[Probe]:
    big, mid = 0, 1  # the biggest tenant has runaway days (decisions); the next has none
    period = {"tenant": tenant_name(big), "period": "2026-03"}
    token, quiet = tenant_token(big), tenant_token(mid)
    return [
        Probe("finance", "finance, month", "/dashboard/finance", MONTH, ADMIN),
        Probe("finance-30d", "finance, 30 days", "/dashboard/finance", THIRTY_DAYS, ADMIN),
        Probe("tenants", "tenant list (admin)", "/dashboard/tenant", MONTH, ADMIN),
        Probe("tenant", f"tenant {tenant_name(big)}, month", "/dashboard/tenant", MONTH, token),
        Probe("tenant-30d", f"tenant {tenant_name(big)}, 30 days", "/dashboard/tenant", THIRTY_DAYS, token),
        Probe("tenant-quiet", f"tenant {tenant_name(mid)}, month", "/dashboard/tenant", MONTH, quiet),
        Probe("invoice", "invoice CSV, month", "/dashboard/export.csv", {**period, "what": "invoice"}, token),
        Probe("entries", "entries CSV, month", "/dashboard/export.csv", {**period, "what": "entries"}, token,
              repeats=entries_repeats),
    ]  # fmt: skip


PAGES = tuple(p.key for p in probes(0))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f}"


HEADER = f"{'page':<28} {'bytes':>11} {'cold ms':>9} {'p50 ms':>9} {'max ms':>9}  warm n"


def row(r: Result, by_call: bool) -> str:
    p50 = _ms(statistics.median(r.warm)) if r.warm else f"{'-':>9}"
    top = _ms(max(r.warm)) if r.warm else f"{'-':>9}"
    line = f"{r.label:<28} {r.size:>11,} {_ms(r.cold)} {p50} {top}  {len(r.warm)}"
    if by_call and r.calls:  # where a warm request's time goes (the cold one's when there is none)
        parts = sorted(r.calls.items(), key=lambda item: -sum(item[1]))
        per_request = max(1, len(r.warm))
        line += "\n    " + ", ".join(f"{p} {sum(t) * 1000 / per_request:.1f}" for p, t in parts)
    return line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, help="cost events in the ledger (default 10,000,000)")
    parser.add_argument("--ledger", type=Path, help="build it here, or reuse it (topped up to --events)")
    parser.add_argument("--repeats", type=int, default=7, help="warm requests per page (default 7)")
    parser.add_argument(
        "--entries-repeats",
        type=int,
        default=0,
        help="warm requests of the entries CSV (default 0: it is slow)",
    )
    parser.add_argument("--pages", default=",".join(PAGES), help=f"which pages, of {','.join(PAGES)}")
    parser.add_argument("--quick", action="store_true", help="20k events, 3 repeats: a smoke run")
    parser.add_argument("--no-evict", action="store_true", help="keep the OS page cache for cold requests")
    parser.add_argument("--by-call", action="store_true", help="also time each API call of the pages")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = args.events or 20_000
        args.repeats = min(args.repeats, 3)
        args.entries_repeats = max(args.entries_repeats, 1)
    args.events = 10_000_000 if args.events is None else args.events
    if args.events < 1000:
        parser.error("--events must be >= 1000")
    if args.repeats < 1 or args.entries_repeats < 0:
        parser.error("--repeats must be >= 1 and --entries-repeats >= 0")
    args.pages = [name.strip() for name in args.pages.split(",") if name.strip()]
    unknown = [name for name in args.pages if name not in PAGES]
    if unknown or not args.pages:
        parser.error(f"--pages: unknown page {unknown} (give some of {','.join(PAGES)})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.ledger is not None:
        run(args, args.ledger)
        return
    scratch = Path(tempfile.mkdtemp(prefix="outlay-bench-dash-"))
    try:
        run(args, scratch / "ledger.db")
    finally:  # a ledger of our own is gone with the run (keep one with --ledger)
        shutil.rmtree(scratch)


def run(args: argparse.Namespace, path: Path) -> None:
    began = time.perf_counter()
    count = build(path, args.events)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    ready = time.perf_counter() - began
    print(f"ledger {path}: {count:,} events, {size / 1e9:.2f} GB (ready in {ready:.0f} s)")
    cold = "first request" if args.no_evict else "first request, ledger file evicted from the OS cache"
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores; cold: {cold}")
    print(f"per API call with --by-call: ms per warm request\n\n{HEADER}", flush=True)
    for probe in probes(args.entries_repeats):
        if probe.key in args.pages:
            repeats = args.repeats if probe.repeats is None else probe.repeats
            result = asyncio.run(_measure(path, probe, repeats, not args.no_evict))
            print(row(result, args.by_call), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
