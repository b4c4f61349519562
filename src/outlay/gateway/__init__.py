"""outlay's LLM gateway: OpenAI- and Anthropic-compatible endpoints that meter, guard and forward.

::

    from outlay.gateway import create_app
    app = create_app("gateway.toml")          # keys, budgets and the ledger, as configured

    from outlay.gateway import Gateway, GatewayConfig, OutlayHooks
    app = Gateway(GatewayConfig.from_env(), hooks=OutlayHooks(keys, outlay=outlay, engine=engine))

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
from ._journal import AdmissionJournal
from ._outlay_hooks import OutlayHooks
from ._server import GatewaySettings, app_from_env, create_app, load_settings

__all__ = [
    "DEFAULT_ROUTES",
    "Admission",
    "AdmissionJournal",
    "Call",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayHooks",
    "GatewaySettings",
    "InMemoryHooks",
    "OpenHooks",
    "Outcome",
    "OutlayHooks",
    "Principal",
    "Route",
    "Settlement",
    "Upstream",
    "app_from_env",
    "client_key",
    "create_app",
    "load_settings",
]
