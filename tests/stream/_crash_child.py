"""A separate process for the crash and multi-process tests: it uses the log, the parent kills it.

Every line it prints is flushed at once, so whatever the parent read before ``kill -9`` is a
promise the child's ``append``/``ack``/``flush`` had already returned.

    append PATH PREFIX COUNT [--threads N] [--delay S]  appends "PREFIX-i", prints "payload offset"
                                                        (COUNT 0: until killed)
    consume PATH CONSUMER BATCH STALL_AT                 reads and acks batches, prints
                                                        "read FIRST LAST" / "acked LAST"; stalls
                                                        before acking batch number STALL_AT
    batch-exit PATH COUNT                                buffers COUNT events, exits without close()
    batch-flush PATH                                     appends through a BatchingAppender, prints
                                                        "flushed I" after each flush(), until killed
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time

from outlay.stream import BatchingAppender, SQLiteEventLog

_print_lock = threading.Lock()


def _say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def append(path: str, prefix: str, count: int, threads: int, delay: float) -> None:
    log = SQLiteEventLog(path)
    time.sleep(delay)

    def producer(name: str) -> None:
        for i in itertools.count() if count == 0 else range(count):
            payload = f"{name}-{i}"
            (offset,) = log.append([payload.encode()])
            _say(f"{payload} {offset}")

    names = [prefix] if threads == 1 else [f"{prefix}.{t}" for t in range(threads)]
    workers = [threading.Thread(target=producer, args=(n,)) for n in names]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()


def consume(path: str, consumer: str, batch_size: int, stall_at: int) -> None:
    log = SQLiteEventLog(path)
    for number in itertools.count():
        records = log.read(consumer, max_records=batch_size, timeout=5)
        if not records:
            return
        _say(f"read {records[0].offset} {records[-1].offset}")
        if number == stall_at:
            time.sleep(3600)  # "processing" the batch when the parent kills us, before the ack
        log.ack(consumer, records[-1].offset)
        _say(f"acked {records[-1].offset}")


def batch_exit(path: str, count: int) -> None:
    log = SQLiteEventLog(path)
    # Nothing would flush before a minute: only the atexit drain can save these events.
    appender = BatchingAppender(log, max_events=count, max_delay=60, max_buffer=count)
    for i in range(count):
        appender.append([f"exit-{i}".encode()])
    _say(f"buffered {appender.pending}")


def batch_flush(path: str) -> None:
    appender = BatchingAppender(SQLiteEventLog(path), max_events=40, max_delay=0.01)
    for i in itertools.count():
        appender.append([f"batch-{i}".encode()])
        if i % 25 == 24:
            appender.flush()
            _say(f"flushed {i}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("append")
    p.add_argument("path")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--delay", type=float, default=0.0)
    p = sub.add_parser("consume")
    p.add_argument("path")
    p.add_argument("consumer")
    p.add_argument("batch", type=int)
    p.add_argument("stall_at", type=int)
    p = sub.add_parser("batch-exit")
    p.add_argument("path")
    p.add_argument("count", type=int)
    p = sub.add_parser("batch-flush")
    p.add_argument("path")
    args = parser.parse_args()
    if args.mode == "append":
        append(args.path, args.prefix, args.count, args.threads, args.delay)
    elif args.mode == "consume":
        consume(args.path, args.consumer, args.batch, args.stall_at)
    elif args.mode == "batch-exit":
        batch_exit(args.path, args.count)
    else:
        batch_flush(args.path)


if __name__ == "__main__":
    main()
