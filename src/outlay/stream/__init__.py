"""Event log seam: durable, ordered, at-least-once delivery of encoded cost events."""

from ._base import EventLog, LogRecord

__all__ = ["EventLog", "LogRecord"]
