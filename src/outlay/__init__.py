"""outlay: per-tenant cost attribution, runtime budgets and an auditable cost ledger for agentic AI.

::

    import outlay

    with outlay.attribute(tenant="acme", feature="research"):
        with outlay.run("orchestrator", kind="agent"):
            outlay.record_llm(provider="openai", response=completion)
    print(outlay.reports().tenants("2026-03-01", "2026-04-01"))
"""

from ._api import (
    configure,
    flush,
    get_outlay,
    meter,
    record,
    record_llm,
    record_tool,
    record_usage,
    reports,
    shutdown,
)
from ._errors import (
    AttributionMissing,
    BackendError,
    BackendUnavailable,
    BudgetError,
    BudgetExceeded,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidBaggage,
    InvalidEvent,
    InvalidInput,
    InvalidUsage,
    NotEntitled,
    NotFound,
    OutlayError,
    RunStopped,
    Throttled,
    Unauthenticated,
    Unpriced,
)
from ._rating import Rating
from ._recording import Metered, Recorder
from ._runtime import Outlay
from ._usage import Usage
from .budgets import Budget, BudgetEngine, Decision
from .context import (
    CostContext,
    Run,
    attribute,
    current,
    extract,
    inject,
    run,
    set_default_environment,
    wrap,
)
from .events import CostEvent, decode_event, encode_event
from .pricing import PriceCatalog, estimate, rate
from .providers import declare_provider, parse_response, usage_from_response, usage_from_stream

__version__ = "0.1.0"

__all__ = [
    "AttributionMissing",
    "BackendError",
    "BackendUnavailable",
    "Budget",
    "BudgetEngine",
    "BudgetError",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "CostContext",
    "CostEvent",
    "Decision",
    "Forbidden",
    "InvalidBaggage",
    "InvalidEvent",
    "InvalidInput",
    "InvalidUsage",
    "Metered",
    "NotEntitled",
    "NotFound",
    "Outlay",
    "OutlayError",
    "PriceCatalog",
    "Rating",
    "Recorder",
    "Run",
    "RunStopped",
    "Throttled",
    "Unauthenticated",
    "Unpriced",
    "Usage",
    "__version__",
    "attribute",
    "configure",
    "current",
    "declare_provider",
    "decode_event",
    "encode_event",
    "estimate",
    "extract",
    "flush",
    "get_outlay",
    "inject",
    "meter",
    "parse_response",
    "rate",
    "record",
    "record_llm",
    "record_tool",
    "record_usage",
    "reports",
    "run",
    "set_default_environment",
    "shutdown",
    "usage_from_response",
    "usage_from_stream",
    "wrap",
]
