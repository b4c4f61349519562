"""Event log seam: durable, ordered, at-least-once delivery of encoded cost events."""

from typing import TYPE_CHECKING

from ._base import EventLog, LogRecord
from ._batching import BatchingAppender
from ._factory import open_event_log
from ._memory import InMemoryEventLog
from ._sqlite import SQLiteEventLog

if TYPE_CHECKING:
    from ._nats import NatsEventLog

__all__ = [
    "BatchingAppender",
    "EventLog",
    "InMemoryEventLog",
    "LogRecord",
    "NatsEventLog",
    "SQLiteEventLog",
    "open_event_log",
]


def __getattr__(name: str) -> object:
    # NatsEventLog needs the optional nats-py (the nats extra): import it only when asked for.
    if name == "NatsEventLog":
        try:
            from ._nats import NatsEventLog
        except ImportError as exc:
            raise ImportError(
                f"NatsEventLog needs the nats extra: pip install 'outlay[nats]' ({exc})"
            ) from exc
        return NatsEventLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
