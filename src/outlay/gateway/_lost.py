"""A gateway's lost calls: :mod:`outlay._lost`, shared with in-process metering."""

from __future__ import annotations

from outlay._lost import LOST_ESTIMATE, LOST_REASON, journal_record, lost_call_event

__all__ = ["LOST_ESTIMATE", "LOST_REASON", "journal_record", "lost_call_event"]
