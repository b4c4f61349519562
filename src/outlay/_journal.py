"""``AdmissionJournal``: what a process admitted and has not yet recorded, on disk.

A call's cost event is written when the call completes. A process (a gateway, or a program metering
its SDK calls in process) killed between admitting a call and recording it (``kill -9``, out of
memory) would leave a call the provider probably billed and the ledger never sees. So each process
appends one line per admitted call (before it goes upstream) to a file of its own, and one line
when the call's event is durable::

    +{"id": "<event id>", "at": ..., "ctx": {...}, "model": ..., "estimate": "0.0123", ...}
    -<event id>
    ={<the call's event, CloudEvents JSON>}      (instead of "-" when the log refused the event)

A process holds an exclusive ``flock`` on its file for its whole life, so the lock is free exactly
when the process is gone (however it died). :meth:`AdmissionJournal.orphans` takes the files whose
lock is free — a dead process's — and yields the calls admitted there and never recorded, to be
recorded as estimates under the very ``event_id`` the completion would have used: the ledger keeps
the first event of an id, so a call that was recorded after all (the process died between the
append and the ``-`` line), or a journal recovered twice, is never counted twice.

A line is one ``write(2)`` to a file opened ``O_APPEND``, with no ``fsync``: it survives the
process (its page cache is the kernel's), not the host losing power. Files live on the host's
disk, so a lost call is recovered by the next process started there: a gateway (``create_app``)
for a gateway's files, an :class:`outlay.Outlay` on the same home for metered calls (``kind``
tells the two apart: each recovers only its own, and charges holds in its own budget store).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from outlay._errors import BackendError, InvalidInput

__all__ = ["GATEWAY", "METERED", "AdmissionJournal", "journal_destination"]

_log = logging.getLogger("outlay")

#: The file name prefix of a gateway's journal (``kind="inflight"``) and of in-process metering's.
GATEWAY: Final = "inflight"
METERED: Final = "metered"
_SUFFIX: Final = ".log"
#: Past this many bytes written, the file is rewritten with the calls still open (usually none).
_COMPACT_AT: Final = 4 << 20


def _append_writer() -> Callable[[int, bytes], int]:
    """``write(2)`` of a line: holding the GIL where the speedups were built. ``os.write`` lets it go
    and takes it back, which beside a thread busy in Python (a batching recorder's, the gateway's
    event loop) waits a switch interval: +32 µs per metered call instead of +3 (benchmarks.md)."""
    if os.environ.get("OUTLAY_NO_SPEEDUPS"):
        return os.write
    try:
        from outlay.ledger._speedups import append_held
    except ImportError:  # built without a compiler: the same call, slower beside a busy thread
        return os.write
    return append_held


_write: Final = _append_writer()


class AdmissionJournal:
    """One process's journal file in ``directory`` (created when the first call is admitted), and
    the recovery of the files of processes that died. ``destination`` names where their calls are
    recorded (the event log): only files of the same destination and ``kind`` are recovered.
    Thread-safe; reopened after ``fork()``."""

    def __init__(
        self, directory: str | os.PathLike[str], *, destination: str = "", kind: str = GATEWAY
    ) -> None:
        if kind not in (GATEWAY, METERED):
            raise InvalidInput(f"must be {GATEWAY!r} or {METERED!r}, got {kind!r}", field="kind")
        self.directory = Path(directory).expanduser()
        # Where recovered calls are recorded (the event log): two gateways sharing a directory but
        # not a ledger (staging and production on one host) must not record each other's calls.
        tag = hashlib.sha256(destination.encode()).hexdigest()[:12] if destination else "any"
        self._prefix = f"{kind}-{tag}-"
        self._lock = threading.Lock()
        self._pid = -1
        self._fd = -1
        self._path: Path | None = None
        self._open: dict[str, bytes] = {}  # event id -> its "+" line, while the call is in flight
        self._written = 0
        self._torn = False  # the file ends in a partial line: the next one starts with a newline

    # -- this process's file ----------------------------------------------------------------------

    def _file(self) -> int:
        if self._pid != os.getpid():  # first use, or a child forked after it: a file of its own
            if self._fd >= 0:  # the parent's: kept open here, it would hold the parent's lock
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd, self._path, self._pid = -1, None, os.getpid()
            self._open, self._written, self._torn = {}, 0, False
        if self._fd < 0:
            self._fd, self._path = self._create(b"")
        return self._fd

    def _create(self, content: bytes) -> tuple[int, Path]:
        """A new locked file holding ``content``: made under a name :meth:`orphans` ignores, locked,
        then renamed, so no recovery can take it for a dead process's in between."""
        fd = -1
        try:
            # Only this user may add files: what a file says is recorded as spend, and its holds charged.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            name = f"{self._prefix}{uuid.uuid4().hex}{_SUFFIX}"
            temporary = self.directory / f".{name}.new"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if content and os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, "the journal's new file was cut short")
            path = self.directory / name
            os.rename(temporary, path)
        except OSError as exc:
            if fd >= 0:
                # Not left open (and locked) behind: a full disk fails every compaction, and each
                # leaked descriptor and half-written file would stay until the process ends.
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                os.close(fd)
            raise BackendError(f"cannot write the admission journal in {self.directory}: {exc}") from exc
        return fd, path

    def admitted(self, event_id: str, record: Mapping[str, Any]) -> None:
        """Note an admitted call (before it goes upstream). Raises :class:`BackendError` if the
        line cannot be written: the call must then not be made, as nothing would remember it."""
        line = b"+" + orjson.dumps({"id": event_id, **record}) + b"\n"
        with self._lock:
            fd = self._file()
            try:
                self._append(fd, line)
            except OSError as exc:
                raise BackendError(f"cannot write the admission journal: {exc}") from exc
            self._open[event_id] = line
            self._written += len(line)

    def _append(self, fd: int, line: bytes) -> None:
        """Append ``line`` whole, or raise. A full disk can take part of a line (a short write):
        that line does not count, and the next one starts on a line of its own — appended to the
        torn one it would be unreadable too, and its call lost with it."""
        if self._torn:
            line = b"\n" + line
        written = _write(fd, line)
        self._torn = written != len(line)
        if self._torn:
            raise OSError(errno.ENOSPC, f"only {written} of the line's {len(line)} bytes were written")

    def recorded(self, event_id: str) -> None:
        """Note that the call's event is durable: there is nothing left to recover for it."""
        with self._lock:
            if self._pid != os.getpid() or self._open.pop(event_id, None) is None:
                return
            try:
                self._append(self._fd, b"-" + event_id.encode() + b"\n")
                self._written += len(event_id) + 2
                if self._written > _COMPACT_AT:
                    self._compact()
            except (OSError, BackendError):  # recovery will find the call recorded (same event id)
                _log.warning("outlay: the admission journal could not note event %s", event_id)

    def _compact(self) -> None:
        """Start a new file with only the calls still in flight, then drop the old one."""
        try:
            fd, path = self._create(b"".join(self._open.values()))
        except BackendError:
            self._written = 0  # tried again in another _COMPACT_AT bytes, not at every completion
            raise
        old_fd, old_path = self._fd, self._path
        self._fd, self._path, self._written = fd, path, sum(map(len, self._open.values()))
        self._torn = False
        assert old_path is not None
        with contextlib.suppress(OSError):
            os.unlink(old_path)
        os.close(old_fd)

    def unrecorded(self, event_id: str, payload: bytes) -> None:
        """The call's event (``payload``, CloudEvents JSON) could not be recorded — the log
        refused it. Kept in place of the admission, so the next start records the event itself:
        its exact cost, which its budget was charged, not the reserved worst case."""
        line = b"=" + payload + b"\n"
        with self._lock:
            if self._pid != os.getpid() or event_id not in self._open:
                return
            try:
                self._append(self._fd, line)
            except OSError:  # the "+" line stands: recovered as an estimate
                _log.warning("outlay: the admission journal could not keep event %s", event_id)
                return
            self._open[event_id] = line
            self._written += len(line)

    def close(self) -> None:
        """Drop this process's file if every call it admitted was recorded; else leave it for
        the next start to recover (an event the log refused is recorded then, as it was)."""
        with self._lock:
            if self._pid != os.getpid() or self._fd < 0:
                return
            if not self._open and self._path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._path)
            os.close(self._fd)
            self._fd, self._path = -1, None

    # -- recovery ---------------------------------------------------------------------------------

    def orphans(self) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        """``(file, calls admitted and never recorded)`` for each file of a process that is gone,
        held locked while the caller records them. The caller deletes the file when done
        (:meth:`forget`); one it leaves is offered again by the next recovery."""
        if not self.directory.is_dir():
            return
        self._drop_stale_temporaries()
        for path in sorted(self.directory.glob(f"{self._prefix}*{_SUFFIX}")):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # recovered (and deleted) by another process meanwhile, or a symbolic link
            try:
                if not _ours(path, os.fstat(fd)):
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                try:
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        continue  # deleted by another recovery after we opened it
                except FileNotFoundError:
                    continue
                with os.fdopen(os.dup(fd), "rb") as handle:
                    yield path, _unrecorded(path, handle.read())
            finally:
                os.close(fd)  # (releases the lock)

    def _drop_stale_temporaries(self) -> None:
        """A process killed while starting a file leaves it under its temporary name: while it
        was one, the calls it held were still in the file it replaced (deleted only after)."""
        for path in self.directory.glob(f".{self._prefix}*{_SUFFIX}.new"):
            try:
                if time.time() - path.stat().st_mtime < 60:
                    continue  # (a live process may be between making and locking it)
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
            except OSError:  # (BlockingIOError: its process is alive, about to rename it)
                pass
            finally:
                os.close(fd)

    @staticmethod
    def forget(path: Path) -> None:
        """Delete a recovered file (call while :meth:`orphans` still holds it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _ours(path: Path, stat: os.stat_result) -> bool:
    """Whether ``path`` is a journal file this user's process made (``0o600``, its owner). Another
    user able to write in the directory could otherwise plant one: its lines would be recorded as
    any tenant's spend, at any amount, and charge any hold it names."""
    if stat.st_uid == os.geteuid() and not stat.st_mode & 0o022:
        return True
    _log.error(
        "outlay: %s is not a journal file of this user (owner uid %d, mode %o); not recovered",
        path, stat.st_uid, stat.st_mode & 0o777,
    )  # fmt: skip
    return False


def _unrecorded(path: Path, data: bytes) -> list[dict[str, Any]]:
    admitted: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            if line[:1] == b"+":
                record = orjson.loads(line[1:])
                admitted[str(record["id"])] = record
            elif line[:1] == b"=":  # the call's event itself, which the log refused
                envelope = orjson.loads(line[1:])
                admitted[str(envelope["id"])] = {"id": envelope["id"], "event": envelope}
            elif line[:1] == b"-":
                admitted.pop(line[1:].decode(), None)
            else:
                raise ValueError("unknown line")
        except (ValueError, KeyError, TypeError):
            # A line cut by a full disk (a write(2) is whole or absent for a process that dies).
            _log.error("outlay: %s line %d is not a journal line; skipped", path, number)
    return list(admitted.values())


def journal_destination(log: object, ledger_url: str) -> str:
    """Where a pipeline's events go (its event log's file, else its ledger URL), as journals tell
    pipelines sharing a directory apart."""
    path = getattr(log, "path", None)
    return str(Path(path).resolve()) if isinstance(path, str | os.PathLike) else ledger_url
