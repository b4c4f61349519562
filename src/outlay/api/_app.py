"""``create_app``: the reporting API as a Starlette ASGI app.

Every endpoint goes through one wrapper: authenticate, check the query string against the
endpoint's parameters, run the (synchronous) ledger work in a worker thread, and turn outlay's
errors into JSON with the right status — bad input is a 4xx naming the field, never a 500.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from outlay._errors import BackendError, Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from outlay.reporting._render import json_bytes

from . import _audit, _billing, _events, _exports, _finance, _reconcile, _usage
from ._auth import ApiTokens, Principal, load_tokens
from ._budgets import ENDPOINTS as BUDGET_ENDPOINTS
from ._budgets import KeySource, Policies, StoreSource, open_budget_view, register
from ._endpoint import Call, Endpoint, Reply
from ._ingest import MAX_BODY
from ._openapi import docs_html, openapi_document
from ._params import Query, path_value

if TYPE_CHECKING:
    from outlay import Outlay

__all__ = ["ENDPOINTS", "create_app"]

_log = logging.getLogger("outlay.api")


def me(call: Call) -> dict[str, Any]:
    p = call.principal
    return {"name": p.name, "role": "admin" if p.is_admin else "tenant", "tenant": p.tenant}


#: The route table: every API endpoint, in the order the docs list them.
ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint("GET", "/api/v1/me", me, "Who the token belongs to", tag="auth"),
    *_usage.ENDPOINTS,
    *_events.ENDPOINTS,
    *_billing.ENDPOINTS,
    *BUDGET_ENDPOINTS,
    *_exports.ENDPOINTS,
    *_finance.ENDPOINTS,
    *_reconcile.ENDPOINTS,
    *_audit.ENDPOINTS,
)
_ACROSS_SEGMENTS: Final = re.compile(r"\{(tenant|run_id)\}")


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, error: str, message: str, field: str | None = None, **headers: str) -> Response:
    return _json({"error": error, "field": field, "message": message}, status, headers or None)


def error_response(exc: Exception) -> Response:
    """The JSON response for an exception raised while serving a request."""
    if isinstance(exc, NotFound):
        return _error(404, "not_found", str(exc).removeprefix(f"{exc.field}: "), exc.field)
    if isinstance(exc, InvalidInput):
        return _error(400, "invalid_input", str(exc).removeprefix(f"{exc.field}: "), exc.field)
    if isinstance(exc, Unauthenticated):
        return _error(401, "unauthenticated", exc.message, **{"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return _error(403, "forbidden", exc.message)
    if isinstance(exc, Conflict):
        return _error(409, "conflict", str(exc))
    if isinstance(exc, BackendError):
        _log.warning("backend error while serving a request: %s", exc)
        return _error(503, "backend_unavailable", "the ledger or event log is not available; retry later")
    _log.exception("unexpected error while serving a request")
    return _error(500, "internal", "internal error; see the server log")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise InvalidInput(f"the body is over {MAX_BODY} bytes; send smaller batches", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:  # a lying or absent Content-Length must not let a body fill memory
            raise InvalidInput(f"the body is over {MAX_BODY} bytes; send smaller batches", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


class _State:
    def __init__(self, outlay: Outlay, tokens: ApiTokens) -> None:
        self.outlay = outlay
        self.tokens = tokens
        self.catch_up_lock = threading.Lock()

    def authenticate(self, request: Request, endpoint: Endpoint | None = None) -> Principal:
        principal = self.tokens.authenticate(request.headers.get("authorization"))
        if endpoint is not None and endpoint.admin_only:
            principal.require_admin(f"{endpoint.method} {endpoint.path}")
        return principal


#: Every answer depends on the caller's token, and a tenant token's URLs are every tenant's URLs
#: (``/api/v1/usage/totals`` is scoped by the token, not the path): no cache may keep one and give
#: it to the next caller, whatever a proxy in front is configured to do. Answers also carry
#: tenants' own strings (a feature named ``<script>...``): no browser may sniff one into a page.
_PRIVATE: Final = {"Cache-Control": "no-store", "Vary": "Authorization", "X-Content-Type-Options": "nosniff"}


def _route(endpoint: Endpoint, state: _State) -> Route:
    async def serve(request: Request) -> Response:
        response = await answer(request)
        response.headers.update(_PRIVATE)
        return response

    async def answer(request: Request) -> Response:
        try:
            principal = state.authenticate(request, endpoint)
            query = Query(request.query_params.multi_items(), endpoint.params)
            body = await _read_body(request) if endpoint.body is not None else b""
            path = {k: path_value(k, str(v)) for k, v in request.path_params.items()}
            call = Call(state.outlay, principal, query, path, body, state.catch_up_lock)
            result = await run_in_threadpool(endpoint.handler, call)
        except Exception as exc:  # every error becomes a JSON answer, never a crash
            return error_response(exc)
        if isinstance(result, Reply):
            if result.media_type == "application/json":
                return _json(result.body, result.status, result.headers)
            return Response(result.body, result.status, dict(result.headers), media_type=result.media_type)
        return _json(result)

    # A tenant or run id may hold "/" (sent as %2F, which the server decodes before routing): such
    # a parameter matches across segments, up to the fixed rest of its path.
    path = _ACROSS_SEGMENTS.sub(r"{\1:path}", endpoint.path)
    return Route(path, serve, methods=[endpoint.method], name=f"{endpoint.method} {endpoint.path}")


def _version() -> str:
    try:
        return version("outlay")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _tokens(tokens: ApiTokens | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None) -> ApiTokens:
    if isinstance(tokens, ApiTokens):
        return tokens
    if isinstance(tokens, list | tuple):
        return ApiTokens.from_entries(tokens)
    return load_tokens(tokens)  # type: ignore[arg-type]


def _dashboard_routes() -> list[BaseRoute]:
    from outlay.dashboard import dashboard_routes  # imported late: the dashboard imports this package

    return dashboard_routes()


def create_app(
    outlay: Outlay | None = None,
    *,
    tokens: ApiTokens | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    budgets: Policies | None = None,
    budget_store: StoreSource | None = None,
    keys: KeySource | None = None,
    extra_routes: Iterable[BaseRoute] = (),
) -> Starlette:
    """The reporting API over ``outlay`` (default: ``Outlay()`` from the environment, closed with
    the app). ``tokens``: an :class:`ApiTokens`, a tokens file path, inline JSON, a list of token
    entries, or ``None`` for ``$OUTLAY_API_TOKENS``; with no token at all this raises ``ConfigError``
    rather than serve an open API. ``budgets`` (a policies file or a list of ``Budget``, default
    ``$OUTLAY_BUDGETS_FILE``), ``budget_store`` (a ``BudgetEngine``, ``BudgetStore`` or URL, default
    ``$OUTLAY_BUDGET_URL``) and ``keys`` (the gateway's key store, default ``$OUTLAY_KEYS_URL``) are
    what ``/api/v1/budgets/status`` reports; see ``open_budget_view``."""
    credentials = _tokens(tokens)
    budget_view = open_budget_view(budgets, budget_store, keys)
    owned = outlay is None
    if outlay is None:
        from outlay import Outlay

        outlay = Outlay()
    state = _State(outlay, credentials)
    register(state.catch_up_lock, budget_view)
    document = openapi_document(ENDPOINTS, _version())
    page = docs_html(document)

    async def openapi(request: Request) -> Response:
        return _json(document)

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    async def root(request: Request) -> Response:
        return RedirectResponse("/docs")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: "no such endpoint; see /docs", 405: "method not allowed on this endpoint"}
        return _error(status, "not_found" if status == 404 else "http_error", message.get(status, str(exc)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                state.outlay.close()
            budget_view.close()

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/", root, methods=["GET"]),
        *(_route(endpoint, state) for endpoint in ENDPOINTS),
        *_dashboard_routes(),  # the web dashboard at /dashboard (reads the app state set below)
        *extra_routes,
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.outlay = outlay
    app.state.endpoints = ENDPOINTS
    app.state.authenticate = state.authenticate
    app.state.tokens = credentials
    app.state.catch_up_lock = state.catch_up_lock
    return app
