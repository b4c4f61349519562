"""Budget admission latency on Redis: reserve + settle through the Lua scripts (EVALSHA).

    python bench/bench_redis_budgets.py [--url redis://127.0.0.1:6379/0] [--n 10000] [--threads 8]

Target (DESIGN.md): reserve + settle p99 <= 1 ms via Redis. Each figure is one reserve followed by
one settle (two round trips), timed per pair with perf_counter_ns. Runs under a fresh key prefix and
deletes it afterwards. "N threads" runs N callers at once in this process (one Redis connection
each) and reports the per-pair latency they saw.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from outlay.budgets import Budget, BudgetEngine, KeyLimit, RedisBudgetStore


def summarise(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[int(len(samples) * 0.99)] / 1000,
        "mean": statistics.fmean(samples) / 1000,
    }


def timed(n: int, pair: Callable[[str], None], tag: str) -> list[int]:
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        pair(f"{tag}{i}")
        samples.append(time.perf_counter_ns() - start)
    return samples


def measure(n: int, pair: Callable[[str], None], threads: int = 1) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:8]  # reservation ids are unique per run of measure
    timed(min(1000, n), pair, f"{run_id}-warm-")
    if threads == 1:
        return summarise(timed(n, pair, f"{run_id}-"))
    results: list[list[int]] = [[] for _ in range(threads)]

    def run(index: int) -> None:
        results[index] = timed(n // threads, pair, f"{run_id}-t{index}-")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return summarise([s for r in results for s in r])


def store_pair(store: RedisBudgetStore, keys: list[KeyLimit]) -> Callable[[str], None]:
    estimate, actual = Decimal("0.0125"), Decimal("0.011")

    def pair(rid: str) -> None:
        store.reserve(rid, keys, estimate, 300.0)
        store.settle(rid, actual)

    return pair


def engine_pair(engine: BudgetEngine) -> Callable[[str], None]:
    scope = {"tenant": "acme", "feature": "search", "run_id": "r1"}

    def pair(_: str) -> None:
        engine.settle(engine.reserve(scope, "0.0125"), "0.011")

    return pair


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    store = RedisBudgetStore(args.url, prefix=f"outlay-bench:{{{uuid.uuid4().hex}}}:")
    big = Decimal("1000000000")
    two = [KeyLimit("tenant:acme:month:2026-11", big), KeyLimit("run:r1", big)]
    three = [*two, KeyLimit("user:u1:rolling:3600", big, 3600)]
    try:
        engine = BudgetEngine(store, policies=[Budget(limit=big, soft=big, scope="tenant"),
                                               Budget(limit=big, scope="feature", period="day")])  # fmt: skip
        engine.start_run("r1", budget=Budget(limit=big))
        rows = [
            ("Redis store, 2 keys", measure(args.n, store_pair(store, two))),
            ("Redis store, 3 keys (one rolling 1 h)", measure(args.n, store_pair(store, three))),
            ("engine + Redis, 3 policies", measure(args.n, engine_pair(engine))),
            (
                f"Redis store, 2 keys, {args.threads} threads",
                measure(args.n, store_pair(store, two), args.threads),
            ),
        ]
        print(f"reserve + settle via {args.url} (us per pair, n={args.n})")
        print(f"{'path':<42} {'p50':>8} {'p99':>8} {'mean':>8}")
        for name, figures in rows:
            print(f"{name:<42} {figures['p50']:>8.1f} {figures['p99']:>8.1f} {figures['mean']:>8.1f}")
    finally:
        print(f"(deleted {store.clear()} bench keys)")
        store.close()


if __name__ == "__main__":
    main()
