"""Budget admission latency: reserve + settle, in-process and on SQLite.

    python bench/bench_budgets.py [--n 20000] [--sqlite-n 3000]

Target (DESIGN.md): reserve + settle <= 50 us in-process. Each figure is one reserve followed by
one settle, timed per pair with perf_counter_ns (so p50/p99 are real per-call latencies).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore, KeyLimit, SQLiteBudgetStore


def measure(n: int, pair: Callable[[int], None]) -> dict[str, float]:
    for i in range(min(1000, n)):  # warm-up
        pair(-i - 1)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        pair(i)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[int(len(samples) * 0.99)] / 1000,
        "mean": statistics.fmean(samples) / 1000,
    }


def store_pair(store: InMemoryBudgetStore | SQLiteBudgetStore, prefix: str) -> Callable[[int], None]:
    keys = [KeyLimit("tenant:acme:month:2026-11", Decimal("1000000")), KeyLimit("run:r1", Decimal("1000000"))]
    estimate, actual = Decimal("0.0125"), Decimal("0.011")

    def pair(i: int) -> None:
        rid = f"{prefix}{i}"
        store.reserve(rid, keys, estimate, 300.0)
        store.settle(rid, actual)

    return pair


def engine_pair(engine: BudgetEngine) -> Callable[[int], None]:
    scope = {"tenant": "acme", "feature": "search", "run_id": "r1"}

    def pair(i: int) -> None:
        engine.settle(engine.reserve(scope, "0.0125"), "0.011")

    return pair


def policies() -> list[Budget]:
    return [
        Budget(limit="1000000", soft="900000", scope="tenant"),
        Budget(limit="1000000", scope="feature", period="day"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--sqlite-n", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    rows.append(("in-memory store, 2 keys", measure(args.n, store_pair(InMemoryBudgetStore(), "m"))))
    engine = BudgetEngine(InMemoryBudgetStore(), policies=policies())
    engine.start_run("r1", budget=Budget(limit="1000000"))
    rows.append(("engine + in-memory, 3 policies", measure(args.n, engine_pair(engine))))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteBudgetStore(Path(tmp) / "b.db")
        rows.append(("SQLite store, 2 keys", measure(args.sqlite_n, store_pair(store, "s"))))
        sq_engine = BudgetEngine(SQLiteBudgetStore(Path(tmp) / "e.db"), policies=policies())
        sq_engine.start_run("r1", budget=Budget(limit="1000000"))
        rows.append(("engine + SQLite, 3 policies", measure(args.sqlite_n, engine_pair(sq_engine))))
    print(f"{'reserve + settle':34} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, figures in rows:
        print(f"{name:34} {figures['p50']:9.1f} {figures['p99']:9.1f} {figures['mean']:9.1f}")


if __name__ == "__main__":
    main()
