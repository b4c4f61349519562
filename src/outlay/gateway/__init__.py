"""outlay's LLM gateway: OpenAI- and Anthropic-compatible endpoints that meter, guard and forward.

::

    from outlay.gateway import Gateway, GatewayConfig, InMemoryHooks, Principal
    app = Gateway(GatewayConfig.from_env(), hooks=my_hooks)   # any ASGI server: uvicorn, hypercorn

See docs/gateway.md.
"""

from __future__ import annotations

from ._app import Gateway
from ._config import DEFAULT_ROUTES, GatewayConfig, Route, Upstream
from ._errors import GatewayError
from ._hooks import (
    Admission,
    Call,
    GatewayHooks,
    InMemoryHooks,
    OpenHooks,
    Outcome,
    Principal,
    Settlement,
    client_key,
)

__all__ = [
    "DEFAULT_ROUTES",
    "Admission",
    "Call",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayHooks",
    "InMemoryHooks",
    "OpenHooks",
    "Outcome",
    "Principal",
    "Route",
    "Settlement",
    "Upstream",
    "client_key",
]
