"""Every error outlay raises derives from :class:`OutlayError`.

Vendor and backend exceptions (sqlite3, psycopg, redis, nats, httpx) are translated at the seam
that talks to them, so callers only ever catch these::

    OutlayError
    ├── ConfigError                 bad configuration or overrides file (also ValueError)
    ├── InvalidInput (ValueError)   bad input, named field by field
    │   ├── InvalidUsage            negative/non-integer counts, missing usage, bad JSON
    │   ├── InvalidEvent            a cost event that fails validation or decoding
    │   ├── InvalidBaggage          malformed or oversized W3C baggage
    │   └── NotFound                a named tenant, run or period that does not exist (API 404)
    ├── Unpriced                    strict rating of a model/unit with no price
    ├── AttributionMissing          strict mode: a billable call with no tenant
    ├── Unauthenticated             a missing, unknown or revoked credential (gateway key)
    ├── Forbidden                   a valid credential asks for what it may not (another tenant)
    ├── BudgetError
    │   ├── BudgetExceeded          a hard limit stops the call or run
    │   ├── RunStopped              a runaway guard stopped the run
    │   ├── Throttled               a tenant's cost rate is over its limit (retry_after)
    │   └── NotEntitled             the tenant's tier may not invoke this run
    └── BackendError                a storage/stream backend failed (translated)
        └── BackendUnavailable      it could not be reached
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "AttributionMissing",
    "BackendError",
    "BackendUnavailable",
    "BudgetError",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InvalidBaggage",
    "InvalidEvent",
    "InvalidInput",
    "InvalidUsage",
    "NotEntitled",
    "NotFound",
    "OutlayError",
    "RunStopped",
    "Throttled",
    "Unauthenticated",
    "Unpriced",
]


class OutlayError(Exception):
    """Base of every error raised by outlay."""


class InvalidInput(OutlayError, ValueError):
    """Input that outlay refuses; the message names the field and what is wrong with it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class ConfigError(InvalidInput):
    """A configuration value or file (price overrides, plans, budgets) is invalid."""


class InvalidUsage(InvalidInput):
    """Usage that cannot be read: bad JSON, missing usage, negative or non-integer counts."""


class InvalidEvent(InvalidInput):
    """A cost event that fails validation or CloudEvents decoding."""


class InvalidBaggage(InvalidInput):
    """A W3C ``baggage`` header that is malformed or over the size limits."""


class NotFound(InvalidInput):
    """A named thing (tenant, run, billing period) that does not exist; the reporting API's 404."""


class Unpriced(OutlayError):
    """No price is known for a model or unit (raised only where a caller asks for strictness)."""


class AttributionMissing(OutlayError):
    """A billable operation has no tenant and the caller required one."""


# --- gateway (outlay.gateway) --------------------------------------------------------------------


class Unauthenticated(OutlayError):
    """A request's credential (gateway virtual key) is missing, unknown or revoked (``reason``)."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class Forbidden(OutlayError):
    """A valid credential asks for something it may not do, e.g. attribution to another tenant."""

    def __init__(self, message: str, *, reason: str = "forbidden") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class BudgetError(OutlayError):
    """Base of the errors that budgets and guardrails raise to stop work."""


# --- budgets (outlay.budgets) -------------------------------------------------------------------
# Each carries structured fields for programs and a sentence for people (its str()); the budgets
# package builds them, so they stay plain here and import nothing.


class BudgetExceeded(BudgetError):
    """A hard limit refuses the call: ``spent + reserved + estimate`` would pass ``limit``."""

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        key: str,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        estimate: Decimal,
        budget: str | None = None,
        shared: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.scope = scope
        self.key = key
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.estimate = estimate
        self.budget = budget
        # A shared budget (Budget(shared=True)) counts every tenant's calls: its spend is theirs
        # too, so the message leaves it out and the gateway does not pass it on to the caller.
        self.shared = shared


class RunStopped(BudgetError):
    """A runaway guard (call count, retry storm, cost velocity) stopped the run; ``reason`` says which."""

    def __init__(self, message: str, *, reason: str, run_id: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.run_id = run_id


class Throttled(BudgetError):
    """The tenant's cost rate is over its limit; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float, tenant: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.tenant = tenant


class NotEntitled(BudgetError):
    """The tenant's plan tier is below the tier the run requires."""

    def __init__(self, message: str, *, tenant: str | None, tier: str | None, requires: str) -> None:
        super().__init__(message)
        self.message = message
        self.tenant = tenant
        self.tier = tier
        self.requires = requires


class BackendError(OutlayError):
    """A storage or stream backend failed; the original exception is chained."""


class BackendUnavailable(BackendError):
    """A backend could not be reached."""


class Conflict(OutlayError):
    """The request is valid but cannot be done in the current state (e.g. sealing a month while
    the ledger is still behind its event log); the message says what to do first."""
