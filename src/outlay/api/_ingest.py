"""``POST /api/v1/events``: cost events from other services, validated one by one.

Each event is checked on its own, so one bad event does not sink a batch: the response lists the
accepted ids and, for each refused event, its index, id, the field at fault and why. Accepted events
are appended to the event log in one durable append before the response is sent (the same log
``Outlay.record`` writes to; one commit per batch instead of one per event). Ingest is idempotent:
an id seen twice in a batch is stored once, and a replayed batch changes no total because the
ledger counts each event id once.

A tenant token may only send its own tenant's events: any other event (another tenant's, or one
with no tenant) is refused with ``status: 403`` in its error, and the rest of the batch goes on.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from outlay._errors import InvalidInput
from outlay.events import encode_event, from_cloudevent
from outlay.ledger._rows import CURRENCY

from ._endpoint import Call, Reply

__all__ = ["MAX_BATCH", "MAX_BODY", "ingest"]

MAX_BATCH: Final = 1000
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


def ingest(call: Call) -> Reply:
    items = _batch(call.body)
    tenant = call.principal.tenant
    accepted: list[str] = []
    duplicates: list[str] = []
    errors: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        raw_id = item.get("id") if isinstance(item, dict) else None
        event_id = raw_id if isinstance(raw_id, str) else None
        try:
            event = from_cloudevent(item)
            if event.currency != CURRENCY:
                raise InvalidInput(
                    f"the ledger holds {CURRENCY} only, got {event.currency!r}", field="data.currency"
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
