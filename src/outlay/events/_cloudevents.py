"""CloudEvents JSON (structured mode, spec 1.0) encoding of :class:`CostEvent`.

Wire shape::

    {"specversion": "1.0", "type": "dev.outlay.cost.v1", "source": "outlay", "id": "<uuidv7>",
     "time": "2026-11-22T06:40:00.123456Z", "datacontenttype": "application/json",
     "subject": "<tenant id or 'unattributed'>", "data": {"schema_version": 1, ..., "cost": "0.0125"}}

Money travels as decimal *strings*; a JSON number in a money field is rejected, because by the time
it is a float its exact value is gone. Unknown fields in ``data`` are rejected too (a typo must not
silently drop attribution), as are unknown schema versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from outlay._errors import InvalidEvent, InvalidInput
from outlay._usage import Usage

from ._event import SCHEMA_VERSION, CostEvent

__all__ = ["CLOUDEVENT_TYPE", "decode_event", "encode_event", "from_cloudevent", "to_cloudevent"]

CLOUDEVENT_TYPE: Final = f"dev.outlay.cost.v{SCHEMA_VERSION}"
_TYPE_PREFIX: Final = "dev.outlay.cost.v"
# RFC 3339 date-time (section 5.6; "T" and "Z" in either case, or a space between date and time as
# its note allows). datetime.fromisoformat alone takes any ISO 8601 form (20260302T1000Z, week dates).
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?((?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)"
)

_STR_FIELDS: Final = (
    "tenant_id",
    "workspace_id",
    "user_id",
    "billing_unit",
    "feature",
    "environment",
    "attribution",
    "origin",
    "request_id",
    "run_id",
    "parent_run_id",
    "root_run_id",
    "agent",
    "run_kind",
    "workflow_id",
    "operation",
    "provider",
    "model",
    "status",
    "currency",
    "unpriced_reason",
    "price_version",
    "region",
    "retention",
)
# Each string field's name as the interned string the CostEvent constructor's parameters are: a
# keyword argument is matched to its parameter by identity first and by comparing strings only
# when that fails, and the keys a JSON parser makes are never those objects (~2 us per event).
_STR_FIELD_NAMES: Final = {name: name for name in _STR_FIELDS}
_DATA_FIELDS: Final = frozenset(
    (
        *_STR_FIELDS,
        "schema_version",
        "labels",
        "run_path",
        "usage",
        "latency_ms",
        "cost",
        "priced",
        "unit_prices",
        "cost_breakdown",
    )
)


def _time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money_text(amount: Decimal) -> str:
    # Plain notation, never an exponent: other languages' decimal parsers read it as is.
    return format(amount, "f")


def to_cloudevent(event: CostEvent) -> dict[str, Any]:
    """The CloudEvents structured-mode dict of ``event`` (JSON-ready)."""
    data: dict[str, Any] = {"schema_version": event.schema_version}
    for name in _STR_FIELDS:
        value = getattr(event, name)
        if value is not None:
            data[name] = value
    data["priced"] = event.priced
    if event.cost is not None:
        data["cost"] = _money_text(event.cost)
    if event.labels:
        data["labels"] = dict(event.labels)
    if event.run_path:
        data["run_path"] = list(event.run_path)
    data["usage"] = event.usage.to_dict()
    if event.latency_ms is not None:
        data["latency_ms"] = event.latency_ms
    if event.unit_prices:
        data["unit_prices"] = {k: _money_text(v) for k, v in event.unit_prices.items()}
    if event.cost_breakdown:
        data["cost_breakdown"] = {k: _money_text(v) for k, v in event.cost_breakdown.items()}
    return {
        "specversion": "1.0",
        "type": CLOUDEVENT_TYPE,
        "source": event.source,
        "id": event.event_id,
        "time": _time_text(event.time),
        "datacontenttype": "application/json",
        "subject": event.tenant_id or "unattributed",
        "data": data,
    }


def encode_event(event: CostEvent) -> bytes:
    """``event`` as CloudEvents JSON bytes."""
    return orjson.dumps(to_cloudevent(event))


def _money(value: object, field: str) -> Decimal:
    if isinstance(value, float):
        raise InvalidEvent(f"money must be a decimal string, not a JSON number ({value!r})", field=field)
    if not isinstance(value, str):
        raise InvalidEvent(f'money must be a decimal string like "0.0125", got {value!r}', field=field)
    if not value.isascii() or "_" in value or value != value.strip():
        # Decimal() also reads "1_000", " 1" and other scripts' digits ("١"): not what was sent.
        raise InvalidEvent(f'money must be a plain decimal string like "0.0125", got {value!r}', field=field)
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidEvent(f"not a decimal amount: {value!r}", field=field) from None
    if not amount.is_finite():
        raise InvalidEvent(f"money must be finite, got {value!r}", field=field)
    if amount < 0:
        raise InvalidEvent(f"money must not be negative, got {value!r}", field=field)
    return amount


def _money_map(value: object, field: str) -> dict[str, Decimal]:
    if not isinstance(value, Mapping):
        raise InvalidEvent("must be an object of decimal strings", field=field)
    return {str(k): _money(v, f"{field}.{k}") for k, v in value.items()}


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent("must be an RFC 3339 timestamp string", field="time")
    shape = _RFC3339.fullmatch(value)
    if shape is not None and not shape.group(1):
        raise InvalidEvent(f"timestamp needs a UTC offset or 'Z': {value!r}", field="time")
    try:
        if shape is None:
            raise ValueError(value)
        return datetime.fromisoformat(value.upper())  # (a date or time out of range: ValueError)
    except ValueError:
        raise InvalidEvent(f"not an RFC 3339 timestamp: {value!r}", field="time") from None


def from_cloudevent(envelope: Mapping[str, Any]) -> CostEvent:
    """Validate a CloudEvents dict and return its :class:`CostEvent`; errors name the field."""
    if type(envelope) is not dict and not isinstance(envelope, Mapping):  # (dict: no ABC check)
        raise InvalidEvent(f"expected a JSON object, got {type(envelope).__name__}", field="event")
    if envelope.get("specversion") != "1.0":
        raise InvalidEvent(f'must be "1.0", got {envelope.get("specversion")!r}', field="specversion")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not event_type.startswith(_TYPE_PREFIX):
        raise InvalidEvent(f"must be {CLOUDEVENT_TYPE!r}, got {event_type!r}", field="type")
    if event_type != CLOUDEVENT_TYPE:
        raise InvalidEvent(
            f"unknown schema version in {event_type!r}; this outlay reads {CLOUDEVENT_TYPE!r}", field="type"
        )
    event_id = envelope.get("id")
    if not event_id:
        raise InvalidEvent("is required", field="id")
    source = envelope.get("source")
    if not isinstance(source, str) or not source:
        raise InvalidEvent("is required", field="source")
    data = envelope.get("data")
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidEvent("must be an object", field="data")
    if not _DATA_FIELDS.issuperset(data):
        unknown = sorted(set(data) - _DATA_FIELDS)
        raise InvalidEvent(f"unknown field(s): {', '.join(map(str, unknown))}", field="data")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidEvent(
            f"unknown schema version {version!r} (this outlay reads {SCHEMA_VERSION})",
            field="data.schema_version",
        )
    kwargs: dict[str, Any] = {
        "event_id": event_id,
        "source": source,
        "time": _parse_time(envelope.get("time")),
    }
    for name, value in data.items():  # only the fields present (a few of the 24)
        field = _STR_FIELD_NAMES.get(name)
        if field is not None and value is not None:
            if type(value) is not str and not isinstance(value, str):
                raise InvalidEvent(f"must be a string, got {value!r}", field=f"data.{name}")
            kwargs[field] = value
    priced = data.get("priced", False)
    if not isinstance(priced, bool):
        raise InvalidEvent(f"must be true or false, got {priced!r}", field="data.priced")
    kwargs["priced"] = priced
    if data.get("cost") is not None:
        kwargs["cost"] = _money(data["cost"], "data.cost")
    if "labels" in data:
        kwargs["labels"] = data["labels"]
    if data.get("run_path") is not None:
        kwargs["run_path"] = data["run_path"]
    if "latency_ms" in data:
        kwargs["latency_ms"] = data["latency_ms"]
    if "unit_prices" in data:
        kwargs["unit_prices"] = _money_map(data["unit_prices"], "data.unit_prices")
    if "cost_breakdown" in data:
        kwargs["cost_breakdown"] = _money_map(data["cost_breakdown"], "data.cost_breakdown")
    try:
        usage = data.get("usage")  # absent or null: no usage; any other non-object is an error
        kwargs["usage"] = Usage.from_dict({} if usage is None else usage)
        return CostEvent(**kwargs)
    except InvalidEvent:
        raise
    except InvalidInput as exc:
        raise InvalidEvent(f"data.{exc}") from None


def decode_event(data: bytes | str | Mapping[str, Any]) -> CostEvent:
    """Decode CloudEvents JSON (bytes, text or an already-parsed dict) into a :class:`CostEvent`."""
    if isinstance(data, Mapping):
        return from_cloudevent(data)
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {exc}", field="event") from None
    return from_cloudevent(parsed)
