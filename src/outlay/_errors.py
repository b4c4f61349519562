"""Every error outlay raises derives from :class:`OutlayError`.

Vendor and backend exceptions (sqlite3, psycopg, redis, nats, httpx) are translated at the seam
that talks to them, so callers only ever catch these::

    OutlayError
    ├── ConfigError                 bad configuration or overrides file (also ValueError)
    ├── InvalidInput (ValueError)   bad input, named field by field
    │   ├── InvalidUsage            negative/non-integer counts, missing usage, bad JSON
    │   ├── InvalidEvent            a cost event that fails validation or decoding
    │   └── InvalidBaggage          malformed or oversized W3C baggage
    ├── Unpriced                    strict rating of a model/unit with no price
    ├── AttributionMissing          strict mode: a billable call with no tenant
    ├── BudgetError
    │   ├── BudgetExceeded          a hard limit stops the call or run
    │   ├── RunStopped              a runaway guard stopped the run
    │   ├── Throttled               a tenant's cost rate is over its limit (retry_after)
    │   └── NotEntitled             the tenant's tier may not invoke this run
    └── BackendError                a storage/stream backend failed (translated)
        └── BackendUnavailable      it could not be reached
"""

from __future__ import annotations

__all__ = [
    "AttributionMissing",
    "BackendError",
    "BackendUnavailable",
    "BudgetError",
    "ConfigError",
    "InvalidBaggage",
    "InvalidEvent",
    "InvalidInput",
    "InvalidUsage",
    "OutlayError",
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


class Unpriced(OutlayError):
    """No price is known for a model or unit (raised only where a caller asks for strictness)."""


class AttributionMissing(OutlayError):
    """A billable operation has no tenant and the caller required one."""


class BudgetError(OutlayError):
    """Base of the errors that budgets and guardrails raise to stop work."""


class BackendError(OutlayError):
    """A storage or stream backend failed; the original exception is chained."""


class BackendUnavailable(BackendError):
    """A backend could not be reached."""
