"""In-process metering of one LLM call: context lookup + usage extraction + rating + event build.

DESIGN target: <= 25 us median on a 2-core machine. Also reports the same plus CloudEvents encoding
and the batching append (what ``outlay.record_llm`` does in batching mode).

    python bench/bench_metering.py [--calls 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import outlay
from outlay import Recorder
from outlay.context import current
from outlay.events import encode_event
from outlay.pricing import default_catalog
from outlay.providers import parse_response
from outlay.stream import InMemoryEventLog

RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 340,
        "total_tokens": 1540,
        "prompt_tokens_details": {"cached_tokens": 512},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def measure(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(2000):  # warm caches (price timeline, code paths)
        fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    log = InMemoryEventLog()
    recorder = Recorder(
        log, catalog=default_catalog(), mode="batching", batch_size=5000, max_buffer=1_000_000
    )

    def meter_only() -> object:
        ctx = current()
        parsed = parse_response("openai", RESPONSE, "chat")
        assert parsed.model is not None
        return recorder.build(
            operation="chat", provider="openai", model=parsed.model, usage=parsed.usage, context=ctx
        )

    def meter_encode() -> object:
        return encode_event(meter_only())  # type: ignore[arg-type]

    def record_llm() -> object:
        return recorder.record_llm(provider="openai", response=RESPONSE, api="chat")

    with outlay.attribute(tenant="acme", feature="chat"), outlay.run("agent"):
        rows = [
            ("context + usage + rating + event build", *measure(meter_only, args.calls)),
            ("  + CloudEvents encode", *measure(meter_encode, args.calls)),
            ("record_llm, batching mode (+ enqueue)", *measure(record_llm, args.calls)),
        ]
    recorder.close()
    print(f"{'what':45} {'p50 us':>8} {'p99 us':>8}")
    for name, p50, p99 in rows:
        print(f"{name:45} {p50:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
