"""The cost event: one immutable, idempotent record per billable operation, and its wire format."""

from ._cloudevents import CLOUDEVENT_TYPE, decode_event, encode_event, from_cloudevent, to_cloudevent
from ._event import (
    ATTRIBUTED,
    CALLER_PRICED,
    ENVIRONMENTS,
    MAX_RUN_PATH,
    SCHEMA_VERSION,
    STATUSES,
    UNATTRIBUTED,
    CostEvent,
    new_event_id,
)

__all__ = [
    "ATTRIBUTED",
    "CALLER_PRICED",
    "CLOUDEVENT_TYPE",
    "ENVIRONMENTS",
    "MAX_RUN_PATH",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNATTRIBUTED",
    "CostEvent",
    "decode_event",
    "encode_event",
    "from_cloudevent",
    "new_event_id",
    "to_cloudevent",
]
