"""What the admission journal adds to a call metered in process (``open_meter`` + ``finish``), in
``batching`` mode, where the recorder's thread is busy beside the caller's.

    python bench/bench_meter_journal.py [--calls 20000] [--rounds 3]
    OUTLAY_NO_SPEEDUPS=1 python bench/bench_meter_journal.py   # lines written by os.write instead
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import outlay
from outlay import Outlay, Usage
from outlay.budgets import BudgetEngine, InMemoryBudgetStore


def measure(journal: bool, calls: int) -> tuple[float, float]:
    """p50 and p99 in µs of one metered call (no provider: the usage is set directly)."""
    home = tempfile.mkdtemp(prefix="outlay-bench-")
    pipeline = Outlay(home + "/outlay.db", mode="batching", journal=journal)
    engine = BudgetEngine(InMemoryBudgetStore())
    usage = Usage(input_tokens=1000, output_tokens=200)
    times = []
    with outlay.attribute(tenant="acme"):
        for _ in range(calls):
            began = time.perf_counter()
            metered = pipeline.recorder.open_meter(
                provider="openai", model="gpt-4o", input_tokens=1000, max_output_tokens=200, budgets=engine
            )
            metered.set_usage(usage)
            metered.finish()
            times.append(time.perf_counter() - began)
    pipeline.close()
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    added = []
    for round_ in range(args.rounds):
        without, with_ = measure(False, args.calls), measure(True, args.calls)
        added.append(with_[0] - without[0])
        print(
            f"round {round_}: p50 / p99 {without[0]:.1f} / {without[1]:.1f} us without the journal,"
            f" {with_[0]:.1f} / {with_[1]:.1f} us with it"
        )
    print(f"added by the journal, median of rounds: {statistics.median(added):.1f} us p50")


if __name__ == "__main__":
    main()
