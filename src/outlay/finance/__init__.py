"""Finance analytics over the ledger: plans and margins, spikes and runaway runs, a pricing
simulator, period close with a verifiable seal, the audit export, and reconciliation with a
provider's usage export.

::

    from outlay.finance import load_plans, margins, close_period, verify_period, period_store_for

    plans = load_plans("plans.toml")
    for row in margins(outlay.ledger, plans, "2026-03", below=Decimal("0.2")):
        print(row.tenant, row.margin, row.bound)
    store = period_store_for(outlay.ledger)           # periods.db beside a SQLite ledger
    seal, created = close_period(outlay.ledger, "2026-03", store)
    assert verify_period(outlay.ledger, "2026-03", store).ok

See docs/finance.md.
"""

from ._anomalies import RunawayRun, Spike, runaway_runs, spikes
from ._audit import AUDIT_COLUMNS, audit_csv, audit_csv_sha256, audit_rows
from ._margin import TenantCost, TenantMargin, margins, tenant_costs
from ._period import Period, parse_period
from ._plans import MODELS, Plan, Plans, load_plans, parse_plans
from ._provider_csv import SHAPES, ProviderExport, model_key, parse_provider_csv
from ._reconcile import Reconciled, Reconciliation, reconcile
from ._seal import (
    CANONICAL_FIELDS,
    Item,
    Verification,
    canonical_lines,
    canonical_sha256,
    close_period,
    period_items,
    seal_items,
    verify_period,
)
from ._simulate import Proposal, Simulated, simulate
from ._store import InMemoryPeriodStore, PeriodStore, Seal, SQLitePeriodStore, TenantSeal, period_store_for

__all__ = [
    "AUDIT_COLUMNS",
    "CANONICAL_FIELDS",
    "MODELS",
    "SHAPES",
    "InMemoryPeriodStore",
    "Item",
    "Period",
    "PeriodStore",
    "Plan",
    "Plans",
    "Proposal",
    "ProviderExport",
    "Reconciled",
    "Reconciliation",
    "RunawayRun",
    "SQLitePeriodStore",
    "Seal",
    "Simulated",
    "Spike",
    "TenantCost",
    "TenantMargin",
    "TenantSeal",
    "Verification",
    "audit_csv",
    "audit_csv_sha256",
    "audit_rows",
    "canonical_lines",
    "canonical_sha256",
    "close_period",
    "load_plans",
    "margins",
    "model_key",
    "parse_period",
    "parse_plans",
    "parse_provider_csv",
    "period_items",
    "period_store_for",
    "reconcile",
    "runaway_runs",
    "seal_items",
    "simulate",
    "spikes",
    "tenant_costs",
    "verify_period",
]
