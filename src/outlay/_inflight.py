"""``MeteredJournal``: the admission journal of calls metered in process (the SDK transports,
``outlay.meter``, ``Recorder.open_meter``), as the gateway keeps one for its calls.

A metered call's event is recorded when the call ends. A process killed during the call (``kill
-9``, out of memory) would leave a call the provider bills and the ledger never sees. So an
:class:`outlay.Outlay` with a home on disk notes each admitted call (the event id its completion
will use, its attribution, provider, model, estimate) in a file of its own under ``inflight/``
beside its event log before the call is made, and notes it done once its event is durable; the
next ``Outlay`` opened on that home records each call a dead process left there once, as an
``estimated`` event at the worst case it held (:func:`outlay._lost.lost_call_event`). The file
format, its locking and its safety rules are :class:`outlay._journal.AdmissionJournal`'s.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import InvalidInput
from ._journal import METERED, AdmissionJournal
from ._lost import journal_record, lost_call_event
from ._recording import Recorder, origin_of
from .context import CostContext
from .events import CostEvent, decode_event, encode_event

if TYPE_CHECKING:
    from .budgets import BudgetEngine

__all__ = ["MeteredJournal"]

_log = logging.getLogger("outlay")
_NO_CONTEXT = CostContext()


class MeteredJournal:
    """One pipeline's journal of metered calls in ``directory``. Thread-safe; after ``fork()`` a
    child keeps a file of its own (the parent's calls stay the parent's)."""

    def __init__(self, directory: str | os.PathLike[str], *, destination: str) -> None:
        self.journal = AdmissionJournal(directory, destination=destination, kind=METERED)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # (batching recorder) calls recorded, not yet durable: (the recorder's mark, event id)
        self._undurable: deque[tuple[int, str]] = deque()

    @property
    def directory(self) -> Path:
        return self.journal.directory

    def admitted(
        self,
        recorder: Recorder,
        event_id: str,
        *,
        context: CostContext | None,
        provider: str,
        model: str,
        requested_model: str | None,
        operation: str,
        estimate: Decimal,
        priced: bool,
        reservation: Any,
    ) -> None:
        """Note an admitted call before it is made. Raises :class:`BackendError` when the line
        cannot be written (the call must then not be made: nothing would remember it)."""
        record = journal_record(
            context=context or _NO_CONTEXT, key_id=None, provider=provider, model=model,
            requested_model=requested_model, operation=operation, estimate=estimate, priced=priced,
            holds=(reservation,) if getattr(reservation, "keys", ()) else (),
        )  # fmt: skip
        if context is None or context.tenant is None:
            record["origin"] = origin_of(recorder, context)  # where it came from, as it would say
        if recorder.service:
            record["source"] = recorder.service
        self.journal.admitted(event_id, record)

    def recorded(self, recorder: Recorder, event_id: str) -> None:
        """The call's event was recorded: noted done at once in durable mode; in batching mode
        once the buffer holding it has reached the log (a kill before that would lose the event
        the journal is there to keep)."""
        if recorder.mode != "batching":
            self.journal.recorded(event_id)
            return
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's marks mean nothing here
                self._undurable.clear()
                self._pid = os.getpid()
            self._undurable.append((recorder.mark(), event_id))
            self._drain(recorder)

    def sync(self, recorder: Recorder) -> None:
        """Note done the calls whose events have become durable (the recorder's buffer reached
        the log: it calls this then)."""
        with self._lock:
            if self._pid == os.getpid():
                self._drain(recorder)

    def _drain(self, recorder: Recorder) -> None:
        while self._undurable and recorder.durable_through(self._undurable[0][0]):
            self.journal.recorded(self._undurable.popleft()[1])

    def unrecorded(self, event: CostEvent) -> None:
        """The call's event could not be recorded (the log refused it): kept in the journal in
        place of the admission, so the next start records it as it was, at its exact cost."""
        self.journal.unrecorded(event.event_id, encode_event(event))

    def dropped(self, event_id: str) -> None:
        """The call ended with nothing to record (its caller was told, with an error)."""
        self.journal.recorded(event_id)

    def close(self, recorder: Recorder) -> None:
        """After the recorder has flushed: note the calls now durable, and drop this process's file
        if none is left in flight (else it stays, for the next start)."""
        self.sync(recorder)
        self.journal.close()

    def recover(self, recorder: Recorder, budgets: BudgetEngine | None = None) -> int:
        """Record the calls that processes now gone admitted and never recorded; returns how
        many. Each is recorded once (under the event id its completion would have had, so never
        twice however often this runs); with ``budgets``, its hold is charged now, not at expiry."""
        # Recorded as the calls were admitted, whatever this pipeline requires of new events (a
        # tenant): a billed call is never refused now. Durable on return, before the file goes.
        writer = Recorder(recorder.log, catalog=recorder.catalog)
        count = 0
        for path, records in self.journal.orphans():
            built: list[tuple[dict[str, Any], CostEvent]] = []
            for record in records:
                try:
                    event = decode_event(record["event"]) if "event" in record else None
                    built.append((record, event or lost_call_event(writer, record, metered=True)))
                except Exception:  # (a line written by another version, say): the others count
                    _log.exception("outlay: cannot record the lost metered call %r", record)
            writer.record_many([event for _, event in built])  # raises: the file stays
            for record, event in built:
                if "event" not in record:
                    _charge(budgets, record, event)
                    _log.warning(
                        "outlay: recorded metered call %s (tenant %s, %s) of a process that stopped"
                        " before recording it, at %s",
                        event.event_id, event.tenant_id, event.model,
                        event.cost if event.priced else "(unpriced)",
                    )  # fmt: skip
            self.journal.forget(path)
            count += len(built)
        return count


def _charge(budgets: BudgetEngine | None, record: dict[str, Any], event: CostEvent) -> None:
    holds: Sequence[str] = record.get("holds") or ()
    if budgets is None or not holds:
        return  # (a hold in a shared store is charged its estimate when it expires)
    for hold_id in holds:
        try:
            budgets.store.settle(hold_id, Decimal(record["estimate"]))
        except InvalidInput:
            pass  # a store that forgot it (in memory, or past its retention), or settled already
        except Exception:
            _log.exception("outlay: charging the hold of lost call %s failed", event.event_id)
