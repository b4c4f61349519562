"""The gateway's admission journal: :class:`outlay._journal.AdmissionJournal`, shared with
in-process metering (an :class:`outlay.Outlay` journals its metered calls the same way)."""

from __future__ import annotations

from outlay._journal import AdmissionJournal

__all__ = ["AdmissionJournal"]
