"""``POST /api/v1/events``: cost events from other services, validated one by one.

Each event is checked on its own, so one bad event does not sink a batch: the response lists the
accepted ids and, for each refused event, its index, id, the field at fault and why. Accepted events
are appended to the event log in one durable append before the response is sent (the same log
``Outlay.record`` writes to; one commit per batch instead of one per event). Ingest is idempotent:
an id seen twice in a batch is stored once, and a replayed batch changes no total because the
ledger counts each event id once.

A tenant token may only send its own tenant's events: any other event (another tenant's, or one
with no tenant) is refused with ``status: 403`` in its error, and the rest of the batch goes on.

A closed (sealed) month takes no new event: one dated in it is refused (``422``, field ``time``),
since it would change a month already billed and make its seal fail to verify. An event the ledger
already holds is still accepted, as any retry is (it changes nothing).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, Final

import orjson

from outlay._errors import InvalidEvent, InvalidInput
from outlay.context._context import check_labels
from outlay.events import CostEvent, encode_event, from_cloudevent
from outlay.finance import Seal, period_store_for
from outlay.ledger._rows import CURRENCY

from ._endpoint import Call, Reply

__all__ = ["MAX_BATCH", "MAX_BODY", "ingest"]

MAX_BATCH: Final = 1000
_DECISION: Final = "decision:"
MAX_BODY: Final = 8 * 1024 * 1024


def _split(exc: InvalidInput) -> tuple[str | None, str]:
    text = str(exc)
    if exc.field is not None:
        return exc.field, text.removeprefix(f"{exc.field}: ")
    head, sep, rest = text.partition(": ")
    # from_cloudevent reports errors inside data as "data.<field>: message" without a field
    return (head, rest) if sep and head.startswith("data.") and " " not in head else (None, text)


def _batch(body: bytes) -> list[Any]:
    if len(body) > MAX_BODY:
        raise InvalidInput(f"the body is over {MAX_BODY} bytes; send smaller batches", field="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc}", field="body") from None
    if isinstance(data, dict) and set(data) == {"events"}:
        data = data["events"]
    if not isinstance(data, list):
        raise InvalidInput('expected a JSON array of CloudEvents or {"events": [...]}', field="body")
    if not data:
        raise InvalidInput("the batch is empty", field="body")
    if len(data) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} events per request, got {len(data)}", field="body")
    return data


class _ClosedMonths:
    """Which months are sealed (each looked up once per batch), and whether the ledger already
    holds an event: a retry of one changes nothing, so it is no new event in a closed month."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._seals: dict[str, Seal | None] = {}

    def refusal(self, event: CostEvent) -> str | None:
        moment = event.time.astimezone(UTC)
        month = f"{moment.year:04d}-{moment.month:02d}"
        if month not in self._seals:
            self._seals[month] = period_store_for(self._call.outlay.ledger).get(month)
        seal = self._seals[month]
        if seal is None or self._known(event):
            return None
        return (
            f"{month} is closed (sealed at {seal.closed_at.isoformat()}): an event dated in it would "
            "change a month already billed and break its seal; date it in an open month"
        )

    def _known(self, event: CostEvent) -> bool:
        ledger = self._call.reports().ledger  # caught up with the event log first
        found = ledger.entries(event.time, event.time + timedelta(microseconds=1), tenant=event.tenant_id)
        return any(entry.event.event_id == event.event_id for entry in found)


def ingest(call: Call) -> Reply:
    items = _batch(call.body)
    tenant = call.principal.tenant
    accepted: list[str] = []
    duplicates: list[str] = []
    errors: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    seen: set[str] = set()
    closed = _ClosedMonths(call)
    for index, item in enumerate(items):
        raw_id = item.get("id") if isinstance(item, dict) else None
        event_id = raw_id if isinstance(raw_id, str) else None
        try:
            event = from_cloudevent(item)
            if event.labels:
                # Bounded as every new event's are (an event already stored is read whatever it holds).
                check_labels(event.labels, error=InvalidEvent, field="data.labels")
            if event.currency != CURRENCY:
                raise InvalidInput(
                    f"the ledger holds {CURRENCY} only, got {event.currency!r}", field="data.currency"
                )
            if (event.operation or "").startswith(_DECISION) and not (event.priced and event.cost == 0):
                # Invoices, margins and reconciliation leave budget decisions out as costing nothing:
                # one that cost something would vanish from the bill while the ledger counts it.
                raise InvalidInput(
                    f"a budget decision ({event.operation!r}) costs nothing: it must be priced with"
                    " cost 0; give a cost to an operation not starting with 'decision:'",
                    field="data.cost",
                )
        except InvalidInput as exc:
            field, message = _split(exc)
            errors.append({"index": index, "id": event_id, "field": field, "message": message, "status": 422})
            continue
        if tenant is not None and event.tenant_id != tenant:
            message = f"this token may only send events of tenant {tenant!r}"
            refusal = {"index": index, "id": event.event_id, "field": "data.tenant_id", "status": 403}
            errors.append({**refusal, "message": message})
            continue
        sealed = closed.refusal(event)
        if sealed is not None:
            errors.append(
                {"index": index, "id": event.event_id, "field": "time", "message": sealed, "status": 422}
            )
            continue
        if event.event_id in seen:
            duplicates.append(event.event_id)
            continue
        seen.add(event.event_id)
        accepted.append(event.event_id)
        payloads.append(encode_event(event))
    if payloads:
        call.outlay.log.append(payloads)  # durable on return (or BackendError -> 503, nothing accepted)
    if not errors:
        status = 200
    elif accepted or duplicates:
        status = 207
    else:
        status = 403 if all(e["status"] == 403 for e in errors) else 422
    body = {"accepted": accepted, "duplicates": duplicates, "errors": errors}
    return Reply(body, status=status)
