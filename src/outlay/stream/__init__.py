"""Event log seam: durable, ordered, at-least-once delivery of encoded cost events."""

from ._base import EventLog, LogRecord
from ._batching import BatchingAppender
from ._factory import open_event_log
from ._memory import InMemoryEventLog
from ._sqlite import SQLiteEventLog

__all__ = [
    "BatchingAppender",
    "EventLog",
    "InMemoryEventLog",
    "LogRecord",
    "SQLiteEventLog",
    "open_event_log",
]
