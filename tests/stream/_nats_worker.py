"""A worker process for the NATS tests: reads one durable consumer, acks, logs what it processed.

    python _nats_worker.py URL STREAM PREFIX CONSUMER OUT_FILE [--hold] [--ack-wait S]

Each processed batch is written to OUT_FILE as one line of space-separated offsets, *after* its
ack returned (what a ledger writer does after its commit). With ``--hold`` the worker reads one
batch, reports it and then waits without acking, to be killed -9 by the test.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from outlay.stream import NatsEventLog


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "stream", "prefix", "consumer", "out"):
        parser.add_argument(name)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--ack-wait", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    out = Path(args.out)
    log = NatsEventLog(args.url, stream=args.stream, subject_prefix=args.prefix, ack_wait=args.ack_wait)
    log.register(args.consumer)
    Path(f"{out}.ready").touch()
    with out.open("a") as sink:
        while not stop:
            records = log.read(args.consumer, max_records=args.batch, timeout=0.2)
            if not records:
                continue
            if args.hold:
                sink.write(" ".join(str(r.offset) for r in records) + "\n")
                sink.flush()
                time.sleep(3600)
            time.sleep(0.002 * len(records) / 10)  # some work, so that the other worker gets a turn
            log.ack(args.consumer, records[-1].offset)
            sink.write(" ".join(str(r.offset) for r in records) + "\n")
            sink.flush()
    log.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
