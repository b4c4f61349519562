"""The cost ledger: idempotent, append-only storage of cost events with rollups, and its writer.

::

    from outlay.ledger import LedgerWriter, SQLiteLedger, rerate

    ledger = SQLiteLedger(".outlay/outlay.db")
    LedgerWriter(event_log, ledger).catch_up()      # log -> ledger, exactly once in totals
    rerate(ledger, rate_event, "2026-03-01", "2026-04-01")   # appends adjustments, never rewrites

See docs/ledger.md.
"""

from ._base import (
    EVENT_GROUP_KEYS,
    GROUP_KEYS,
    SEVERAL_TENANTS,
    Adjustment,
    LedgerEntry,
    LedgerStore,
    Rejected,
    RunTotals,
    Totals,
    WriteResult,
)
from ._memory import InMemoryLedger
from ._open import DEFAULT_PATH, ledger_url, open_ledger
from ._rerate import RateFunction, RerateResult, catalog_rater, rerate
from ._sqlite import SQLiteLedger, speedups
from ._window import Window, parse_instant, parse_window
from ._writer import DEFAULT_BATCH, LedgerWriter, WriterStats

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_PATH",
    "EVENT_GROUP_KEYS",
    "GROUP_KEYS",
    "SEVERAL_TENANTS",
    "Adjustment",
    "InMemoryLedger",
    "LedgerEntry",
    "LedgerStore",
    "LedgerWriter",
    "RateFunction",
    "Rejected",
    "RerateResult",
    "RunTotals",
    "SQLiteLedger",
    "Totals",
    "Window",
    "WriteResult",
    "WriterStats",
    "catalog_rater",
    "ledger_url",
    "open_ledger",
    "parse_instant",
    "parse_window",
    "rerate",
    "speedups",
]
