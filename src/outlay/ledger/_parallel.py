"""``WriterProcesses``: a batch of the log decoded and written by several processes at once.

One writer process is bound by the CPU of one core: decoding an event's CloudEvents JSON into a
checked :class:`CostEvent` and building its ledger rows is Python work, under one GIL. Split among
``n`` processes, each decodes and writes its share of the batch into the same ledger through its
own connection (SQLite serialises their commits on its write lock, PostgreSQL runs them side by
side), and the parent acknowledges the log only once every share is committed. Writes are
idempotent on the event id, so a share that failed, or a process that died, only means the batch
is read and written again: nothing is lost and nothing is counted twice.

The processes are new interpreters (``python -c``), not forks: no SQLite connection, lock or
thread of the parent is inherited, and, unlike multiprocessing's ``spawn``, the caller's main
module is not imported again (a script without an ``if __name__ == "__main__"`` guard works). They
exit when the parent closes them, or dies: they read their work from a pipe that closes with it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Final

from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay._gc import gc_paused
from outlay.events import CostEvent
from outlay.stream import LogRecord

from ._base import LedgerStore

if TYPE_CHECKING:
    from ._writer import WriterStats

__all__ = ["WriterProcesses", "ledger_opener"]

#: Shares of a batch per process, handed out in turn: one process then decodes its next share
#: while another holds SQLite's write lock (with one share each, both decoded at once and then
#: waited on each other's commit). Measured: 2 processes, batches of 40,000, 1 / 2 / 3 / 4 shares
#: each: 38k / 46k-49k / 47k / 39k events/s, against 33k-36k for one process (docs/benchmarks.md).
_SHARES_PER_PROCESS: Final = 2
#: Seconds a process is given to finish its share and exit on close, before it is terminated.
_CLOSE_TIMEOUT: Final = 10.0

#: Where this outlay is imported from (a site-packages, a source tree, a zipapp): a writer process
#: imports the same one, not whatever its interpreter would find first (another version, or none).
_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT: Final = "import sys; sys.path.insert(0, {root!r}); from outlay.ledger._parallel import serve; serve()"

# What a process needs to open the parent's ledger again: ("sqlite", path) or ("postgres", url, schema).
Opener = tuple[str, ...]


def ledger_opener(ledger: LedgerStore) -> Opener:
    """How another process opens ``ledger``: only a ledger in a file or a server can be shared."""
    from ._sqlite import SQLiteLedger

    if isinstance(ledger, SQLiteLedger):
        return ("sqlite", str(ledger.path))
    url, schema = getattr(ledger, "url", None), getattr(ledger, "schema", None)
    if type(ledger).__name__ == "PostgresLedger" and isinstance(url, str) and isinstance(schema, str):
        return ("postgres", url, schema)
    raise ConfigError(
        f"several writer processes need a SQLite or PostgreSQL ledger, not {type(ledger).__name__}"
        " (another process cannot reach it)",
        field="processes",
    )


def _open(opener: Opener) -> LedgerStore:
    if opener[0] == "sqlite":
        from ._sqlite import SQLiteLedger

        return SQLiteLedger(opener[1])
    from ._postgres import PostgresLedger

    return PostgresLedger(opener[1], schema=opener[2])


def serve() -> None:
    """A writer process (its stdin and stdout are the pipes to the parent): opens the ledger, then
    writes each share it is sent until told to stop (``None``) or the parent goes away; answers
    each share with its counts or its failure."""
    from ._writer import WriterStats, write_records

    # Ctrl-C reaches the whole process group, a service manager's SIGTERM often too: the parent
    # finishes the batch in hand and then closes us, so we leave stopping to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print() must not corrupt the answers: stdout goes to stderr
    path, opener, decode_blob, consumer = inbox.recv()
    sys.path[:] = path  # the parent's, so its decode function imports here too
    try:
        decode = pickle.loads(decode_blob)
    except Exception as exc:  # a function of the parent's __main__ script, say
        outbox.send(("config", f"a writer process cannot import the decode function: {exc}"))
        return
    try:
        ledger = _open(opener)
    except Exception as exc:
        outbox.send(("backend", f"a writer process cannot open the ledger: {exc}"))
        return
    outbox.send(("ready", None))
    try:
        while True:
            try:
                share = inbox.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if share is None:
                return
            step = WriterStats()  # (the parent counts what it read)
            try:
                with gc_paused():
                    write_records(ledger, [LogRecord(o, p) for o, p in share], decode, consumer, step)
            except BackendError as exc:
                outbox.send(("backend", str(exc)))
            except Exception as exc:
                outbox.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                outbox.send(("ok", step))
    finally:
        ledger.close()


class WriterProcesses:
    """``processes`` writer processes for ``ledger`` (see the module docstring)."""

    def __init__(
        self,
        ledger: LedgerStore,
        processes: int,
        decode: Callable[[bytes], CostEvent],
        consumer: str,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
            raise InvalidInput(f"must be an integer of at least 2, got {processes!r}", field="processes")
        opener = ledger_opener(ledger)
        try:
            decode_blob = pickle.dumps(decode)
        except Exception:
            raise ConfigError(
                f"several writer processes need a decode function they can import, not {decode!r}",
                field="decode",
            ) from None
        self._setup = (list(sys.path), opener, decode_blob, consumer)
        self.processes = processes
        self._workers: list[tuple[subprocess.Popen[bytes], Connection, Connection]] = []

    def _start(self) -> None:
        try:
            for _ in range(self.processes):
                process = subprocess.Popen(
                    [sys.executable, "-c", _BOOT.format(root=_ROOT)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                assert process.stdin is not None
                assert process.stdout is not None
                work = Connection(os.dup(process.stdin.fileno()), readable=False)
                answers = Connection(os.dup(process.stdout.fileno()), writable=False)
                process.stdin.close()  # (the dups above are the ends we use)
                process.stdout.close()
                self._workers.append((process, work, answers))
                # A process that died as it started (killed, out of memory) breaks this pipe: a
                # BackendError, retried like any other, not an OSError that ends the writer.
                work.send(self._setup)
            ready = [answers.recv() for _, _, answers in self._workers]
        except (EOFError, OSError) as exc:
            self.close()
            raise BackendError(f"a writer process did not start: {exc or type(exc).__name__}") from None
        failed = [message for kind, message in ready if kind != "ready"]
        if failed:
            self.close()
            kinds = {kind for kind, _ in ready}
            raise (ConfigError(failed[0], field="decode") if "config" in kinds else BackendError(failed[0]))

    def write(self, records: Sequence[LogRecord], step: WriterStats) -> None:
        """Write ``records`` split in contiguous shares, handed to the processes in turn (each
        writes its shares in order, one transaction each); adds the counts to ``step`` once every
        share is committed. Raises :class:`BackendError` if any share failed or a process died
        (the processes are then replaced), so the batch is retried whole."""
        if not self._workers:
            self._start()
        size = -(-len(records) // (self.processes * _SHARES_PER_PROCESS))
        shares = [records[at : at + size] for at in range(0, len(records), size)]
        sent = []
        try:
            for index, share in enumerate(shares):
                _, work, answers = self._workers[index % self.processes]
                work.send([(r.offset, r.payload) for r in share])
                sent.append(answers)
            replies = [answers.recv() for answers in sent]
        except (EOFError, OSError) as exc:
            self.close()  # a process died: start afresh on the next batch
            raise BackendError(f"a writer process stopped: {exc or type(exc).__name__}") from None
        except BaseException:
            # Interrupted (Ctrl-C, a signal handler's exception) with answers still to come: the
            # next batch would read them as its own and acknowledge its shares before they are
            # committed. These processes are out of step: stop them; the batch is not acknowledged.
            self._kill()
            raise
        failures = [reply for reply in replies if reply[0] != "ok"]
        for reply in replies:
            if reply[0] == "ok":
                step.add(reply[1])
        if failures:
            kind, message = failures[0]
            if kind == "backend":
                raise BackendError(message)
            raise RuntimeError(f"writer process: {message}")

    def _kill(self) -> None:
        workers, self._workers = self._workers, []
        for process, work, answers in workers:
            process.kill()
            work.close()
            answers.close()
        for process, _, _ in workers:
            process.wait()

    def close(self) -> None:
        """Stop the processes (each finishes the share in hand first)."""
        workers, self._workers = self._workers, []
        for _, work, answers in workers:
            with contextlib.suppress(OSError):  # already gone
                work.send(None)
            work.close()
            answers.close()
        for process, _, _ in workers:
            try:
                process.wait(_CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
