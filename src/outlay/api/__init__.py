"""The reporting API: usage, runs, the event ledger, invoices, budget decisions and event ingest,
over HTTP with admin and tenant-scoped tokens.

::

    from outlay import Outlay
    from outlay.api import create_app

    app = create_app(Outlay(), tokens="tokens.toml")   # any ASGI server; `outlay api` runs uvicorn

See docs/api.md.
"""

from ._app import ENDPOINTS, create_app, error_response
from ._auth import ApiTokens, Principal, hash_token, load_tokens, new_token
from ._endpoint import Call, Endpoint, Reply

__all__ = [
    "ENDPOINTS",
    "ApiTokens",
    "Call",
    "Endpoint",
    "Principal",
    "Reply",
    "create_app",
    "error_response",
    "hash_token",
    "load_tokens",
    "new_token",
]
