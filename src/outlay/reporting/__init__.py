"""Reports over the cost ledger: per tenant, breakdowns, run trees, unattributed and unpriced spend.

::

    from outlay.ledger import SQLiteLedger
    from outlay.reporting import Reports

    reports = Reports(SQLiteLedger(".outlay/outlay.db"))
    reports.breakdown("tenant,model", "2026-03-01", "2026-04-01")

See docs/reports.md.
"""

from ._render import csv_cell, csv_value, render_csv, render_json
from ._reports import TOKEN_COLUMNS, Reports

__all__ = ["TOKEN_COLUMNS", "Reports", "csv_cell", "csv_value", "render_csv", "render_json"]
