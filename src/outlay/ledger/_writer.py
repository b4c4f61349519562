"""``LedgerWriter``: moves events from the event log into the ledger, exactly once in totals.

Each step reads a batch, decodes it (a payload that cannot be decoded or held is rejected into
the ledger's reject table, never into the totals), writes the batch in one ledger transaction and
only *then* acknowledges the log. A crash anywhere before the ack means the batch is read again;
the ledger ignores the event ids it already has, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from outlay._errors import BackendError, InvalidInput
from outlay._gc import gc_paused
from outlay.events import CostEvent, decode_event
from outlay.stream import EventLog, LogRecord

from ._base import LedgerStore
from ._parallel import WriterProcesses
from ._rows import CURRENCY

__all__ = ["DEFAULT_BATCH", "LedgerWriter", "WriterStats"]

logger = logging.getLogger("outlay.ledger")

_MAX_BACKOFF: Final = 30.0
#: Records per step. Each commit rewrites every page its batch touched (the rollup rows, each
#: tenant's end of the (tenant, time) index): over 1M events of a 500-tenant workload, batches of
#: 20,000 wrote 2.2 KB of WAL per event against 3.7 KB at 5,000, and the writer went from 27-30k
#: to 34-38k events/s (docs/benchmarks.md), for ~55 MB of Python objects per step instead of ~15 MB.
DEFAULT_BATCH: Final = 20_000
#: With ``trim_log``: seconds between trims while records keep coming (an idle writer trims at once),
#: and offsets dropped per log transaction (appends wait for the log's write lock meanwhile).
_TRIM_EVERY: Final = 5.0
_TRIM_CHUNK: Final = 10_000


@dataclass(slots=True)
class WriterStats:
    """Counts of what a writer did (one step, or accumulated since it started)."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0

    def add(self, other: WriterStats) -> None:
        self.read += other.read
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.batches += other.batches


class LedgerWriter:
    """Consumes ``log`` as ``consumer`` and writes into ``ledger``.

    Run one writer per consumer name at a time (the log hands a consumer's records to whoever
    reads them); several writers are still safe for the totals, just wasteful. ``processes`` > 1
    decodes and writes each batch in that many processes (a SQLite or PostgreSQL ledger only; see
    :mod:`outlay.ledger._parallel`): the writer's CPU work then runs on as many cores. Call
    :meth:`close` when done with such a writer.

    ``trim_log=True`` drops from the log what the ledger holds (:meth:`trim_log`): when idle, and
    every few seconds under load. Off by default, so that the log can be replayed from offset 0.
    """

    def __init__(
        self,
        log: EventLog,
        ledger: LedgerStore,
        consumer: str = "ledger",
        *,
        batch_size: int = DEFAULT_BATCH,
        decode: Callable[[bytes], CostEvent] = decode_event,
        processes: int = 1,
        trim_log: bool = False,
    ) -> None:
        if not isinstance(trim_log, bool):
            raise InvalidInput(f"must be True or False, got {trim_log!r}", field="trim_log")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"must be a positive integer, got {batch_size!r}", field="batch_size")
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise InvalidInput(f"must be a positive integer, got {processes!r}", field="processes")
        self.log = log
        self.ledger = ledger
        self.consumer = consumer
        self.batch_size = batch_size
        self._decode = decode
        # Several processes decode and write each batch (started with the first batch).
        self._processes = WriterProcesses(ledger, processes, decode, consumer) if processes > 1 else None
        self.stats = WriterStats()
        self.trimming = trim_log
        self._trimmed_to: int | None = None  # the log's records below it were dropped, if they could be
        self._trim_due = 0.0

    def run_once(self, max_records: int | None = None, timeout: float = 0.0) -> WriterStats:
        """Read, write and acknowledge one batch (waiting up to ``timeout`` s for the first record)."""
        records = self.log.read(self.consumer, max_records or self.batch_size, timeout)
        step = WriterStats(read=len(records))
        if not records:
            return step
        with gc_paused():  # decoding and writing a batch make many small objects, no cycles
            return self._write_batch(records, step)

    def _write_batch(self, records: Sequence[LogRecord], step: WriterStats) -> WriterStats:
        if self._processes is not None:
            self._processes.write(records, step)
        else:
            write_records(self.ledger, records, self._decode, self.consumer, step)
        # Only now, with the batch committed (or rejected durably), may the log forget it.
        self.log.ack(self.consumer, records[-1].offset)
        step.batches = 1
        self.stats.add(step)
        return step

    def trim_log(self, *, whole: bool = True) -> int:
        """Drop from the log the records this writer has written (the ledger holds each, payload
        and all, or its reject table does); returns how many were dropped. Records another
        registered consumer has not acknowledged stay (``EventLog.truncate``). ``whole=False``
        drops only what was acknowledged since the last trim, in transactions of a bounded size,
        so that appends wait at most one of them; the first trim, and any ``whole`` one, drop
        everything they may in one go (a lagging consumer's records, once it caught up)."""
        target = self.log.committed(self.consumer) + 1
        dropped = 0
        start = self._trimmed_to
        if whole or start is None:
            dropped = self.log.truncate(target)
        else:
            while start < target:
                start = min(start + _TRIM_CHUNK, target)
                dropped += self.log.truncate(start)
        self._trimmed_to = max(target, self._trimmed_to or 0)
        self._trim_due = time.monotonic() + _TRIM_EVERY
        if dropped:
            logger.debug("ledger writer %r: dropped %d written records from the log", self.consumer, dropped)
        return dropped

    def close(self) -> None:
        """Stop the writer processes, if any (the log and the ledger are the caller's)."""
        if self._processes is not None:
            self._processes.close()

    def catch_up(self, *, patience: float = 30.0, stop: threading.Event | None = None) -> WriterStats:
        """Write everything up to the end of the log as it is now; returns this call's counts.

        On a shared log (NATS) records past this consumer's position may be held by another
        worker — or by one that died, until the log hands them out again (``ack_wait``). Then this
        waits for them, up to ``patience`` seconds without progress, rather than stop short.
        Once ``stop`` is set, the batch in hand is finished and acknowledged, and this returns.
        """
        total = WriterStats()
        target = self.log.end_offset()
        idle_since: float | None = None
        while not (stop is not None and stop.is_set()) and self.log.committed(self.consumer) < target:
            step = self.run_once(timeout=0.0 if idle_since is None else 0.5)
            if step.read:
                total.add(step)
                idle_since = None
                continue
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
            elif now - idle_since > patience:
                break
        return total

    def run_forever(self, stop: threading.Event, *, poll: float = 0.5) -> WriterStats:
        """Write until ``stop`` is set. Backend failures are retried with backoff, never skipped.
        When the log has nothing new, the ledger does its background upkeep (:meth:`maintain`)
        a bounded step at a time, each step followed by a look at the log."""
        total = WriterStats()
        backoff = 0.1
        upkeep = True  # whether the ledger may have background upkeep to do
        while not stop.is_set():
            try:
                # With upkeep pending, look for records without waiting: it runs only when idle.
                step = self.run_once(timeout=0.0 if upkeep else poll)
                if step.read:
                    upkeep = True
                    if self.trimming and time.monotonic() >= self._trim_due:
                        self.trim_log(whole=False)  # under load, the last few seconds' records
                elif upkeep:
                    upkeep = self.ledger.maintain()
                elif self.trimming and time.monotonic() >= self._trim_due:
                    self.trim_log()  # idle: everything it may
            except BackendError:
                logger.exception(
                    "ledger writer %r: backend failed; retrying in %.1fs", self.consumer, backoff
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.1
            total.add(step)
        return total


def write_records(
    ledger: LedgerStore,
    records: Sequence[LogRecord],
    decode: Callable[[bytes], CostEvent],
    consumer: str,
    step: WriterStats,
) -> None:
    """Decode ``records`` and write them into ``ledger`` in one transaction, counting into
    ``step``; a payload that cannot be decoded or held goes to the ledger's reject table."""
    events: list[CostEvent] = []
    payloads: list[bytes] = []
    offsets: list[int] = []
    for record in records:
        try:
            event = decode(record.payload)
            if event.currency != CURRENCY:
                raise InvalidInput(
                    f"the ledger totals {CURRENCY} only, got {event.currency}", field="currency"
                )
        except Exception as exc:
            # Decoding is pure: whatever it raises, this payload can never be written, and
            # retrying it would block the log forever. It goes to the reject table instead.
            ledger.reject(record.payload, f"offset {record.offset}: {_reason(exc)}")
            step.rejected += 1
            continue
        events.append(event)
        payloads.append(record.payload)
        offsets.append(record.offset)
    if events:
        _write(ledger, events, payloads, offsets, consumer, step)


def _write(
    ledger: LedgerStore,
    events: list[CostEvent],
    payloads: list[bytes],
    offsets: list[int],
    consumer: str,
    step: WriterStats,
) -> None:
    """Write a batch. Should the ledger refuse it for something in its data rather than fail as
    a backend (an event that decodes but cannot be totalled — written by an older outlay, say),
    the batch is split until each event it refuses is alone, and that one is rejected: one bad
    event must not hold back everyone's. Writes are idempotent, so the halves are safe."""
    try:
        result = ledger.write(events, payloads)
    except BackendError:
        raise  # the store is failing, not the data: retried whole, never rejected
    except Exception as exc:
        if len(events) > 1:
            half = len(events) // 2
            _write(ledger, events[:half], payloads[:half], offsets[:half], consumer, step)
            _write(ledger, events[half:], payloads[half:], offsets[half:], consumer, step)
            return
        reason = _reason(exc)
        logger.warning("ledger writer %r: rejected event at offset %d: %s", consumer, offsets[0], reason)
        ledger.reject(payloads[0], f"offset {offsets[0]}: the ledger cannot hold it: {reason}")
        step.rejected += 1
        return
    step.inserted += result.inserted
    step.duplicates += result.duplicates


def _reason(exc: Exception) -> str:
    """Why an event was rejected: an input error's own message, else the exception's type too."""
    return str(exc) if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
