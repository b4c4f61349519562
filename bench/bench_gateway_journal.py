"""What the admission journal adds to a gateway call: ``OutlayHooks`` authenticate + admit +
complete in process (in-memory ledger and budgets, so the journal's share is not hidden by an
fsync), without and with the journal, in alternating rounds::

    python bench/bench_gateway_journal.py --rounds 8 --calls 3000

Prints each round's p50 and the median of the per-round differences (docs/gateway.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from outlay._runtime import Outlay
from outlay._usage import Usage
from outlay.gateway import AdmissionJournal, Call, GatewayConfig, Outcome, OutlayHooks
from outlay.keys import InMemoryKeyStore

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 16}


async def p50(journal: AdmissionJournal | None, calls: int) -> float:
    home = Outlay("memory://")
    keys = InMemoryKeyStore()
    _, secret = keys.create("acme")
    hooks = OutlayHooks(keys, outlay=home, journal=journal, cache_ttl=60)
    upstream = GatewayConfig.from_env({"OPENAI_API_KEY": "x"}).upstreams["openai"]
    raw = json.dumps(BODY).encode()
    headers = {"authorization": f"Bearer {secret}"}
    usage = Usage(input_tokens=30, output_tokens=16)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        principal = await hooks.authenticate(headers)
        call = Call("chat", "gpt-4o-mini", "gpt-4o-mini", upstream, False, BODY, headers, raw=raw)
        admission = await hooks.admit(principal, call)
        await hooks.complete(admission, Outcome(200, usage, latency_s=0.01, model="gpt-4o-mini"))
        times.append(time.perf_counter() - started)
    await hooks.aclose()
    home.close()
    return statistics.median(times[calls // 6 :]) * 1e6  # after a warm-up


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    deltas = []
    for number in range(args.rounds):
        without = await p50(None, args.calls)
        with tempfile.TemporaryDirectory() as directory:
            with_journal = await p50(AdmissionJournal(directory), args.calls)
        deltas.append(with_journal - without)
        print(f"round {number}: p50 {without:.1f} us without the journal, {with_journal:.1f} us with it")
    print(f"added by the journal, median of rounds: {statistics.median(deltas):.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
