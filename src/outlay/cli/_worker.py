"""``outlay worker``: the consumers of the event log — the ledger writer — as their own process."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from outlay._errors import OutlayError

__all__ = ["worker"]


@click.command()
@click.option("--url", envvar="OUTLAY_URL", help="outlay home / ledger URL (default ./.outlay/outlay.db).")
@click.option(
    "--stream", "stream_url", envvar="OUTLAY_STREAM_URL", help="event log URL (nats://... to share)."
)
@click.option(
    "--ledger",
    "ledger_url",
    envvar="OUTLAY_LEDGER_URL",
    help="ledger URL (postgresql://...); a SQLite ledger given without --url is the home, and its "
    "event log the one beside it.",
)
@click.option(
    "--consumer", default="ledger", show_default=True, help="durable consumer name (shared by workers)."
)
@click.option(
    "--batch-size",
    default=20_000,  # outlay.ledger.DEFAULT_BATCH, not imported here to keep the CLI's start light
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="records written per ledger transaction (bigger batches rewrite fewer pages per event).",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="processes that decode and write each batch (a SQLite or PostgreSQL ledger): the writer's "
    "CPU work on as many cores.",
)
@click.option(
    "--once",
    is_flag=True,
    help="catch up to the end of the log, roll the events up by hour and index them by tenant, then "
    "exit (on NATS it waits "
    "up to 30 s for batches held by other or killed workers).",
)
@click.option(
    "--trim-log",
    is_flag=True,
    help="drop from the event log the records written into the ledger (when idle, and every few "
    "seconds under load); records another registered consumer has not acknowledged stay. Without "
    "it the log keeps everything, for replays from offset 0.",
)
def worker(
    url: str | None,
    stream_url: str | None,
    ledger_url: str | None,
    consumer: str,
    batch_size: int,
    processes: int,
    once: bool,
    trim_log: bool,
) -> None:
    """Write the event log into the ledger until SIGTERM or Ctrl-C.

    Each batch is committed to the ledger (idempotently, with its rollups) before it is
    acknowledged, so a worker killed at any moment loses nothing and doubles nothing. Run several
    workers with one NATS stream and the same --consumer to share the load; with --processes N one
    worker decodes and writes each batch in N processes (the embedded log has one reader). On
    SIGTERM the batch in hand is finished and acknowledged, then the worker exits. When the log has
    nothing new, the worker rolls the SQLite ledger's events up by hour (for reports over windows
    with times of day) and indexes them by tenant (for a tenant's entries and totals). With
    --trim-log it also drops from the log what the ledger now holds, so the log stays the size of
    its backlog.
    """
    from outlay._runtime import Outlay
    from outlay.ledger import LedgerWriter

    try:
        pipeline = Outlay(url, stream_url=stream_url, ledger_url=ledger_url)
        writer = LedgerWriter(
            pipeline.log,
            pipeline.ledger,
            consumer,
            batch_size=batch_size,
            processes=processes,
            trim_log=trim_log,
        )
    except OutlayError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if once:
            stats = writer.catch_up(stop=stop)
            # Caught up: the upkeep a following worker does when idle (hour rollups, tenant index), so that a
            # worker run from cron fills them too; bounded steps, each stoppable by SIGTERM.
            while not stop.is_set() and pipeline.ledger.maintain():
                pass
            if trim_log and not stop.is_set():
                writer.trim_log()
        else:
            stats = writer.run_forever(stop)
    except OutlayError as exc:  # --once: a failing log or ledger is reported, not retried
        raise click.ClickException(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        writer.close()
        # Not Outlay's own catch-up on close: after SIGTERM (or a failure) the rest of the log is
        # the next worker's, and stopping must not wait for a whole backlog to be written.
        pipeline.close(catch_up=False)
    click.echo(
        f"worker {consumer!r}: {stats.read} read, {stats.inserted} written, "
        f"{stats.duplicates} duplicates, {stats.rejected} rejected"
    )
