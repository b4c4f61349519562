"""Dashboard routes, mounted at ``/dashboard`` inside the API app.

Authentication uses the API's tokens: an ``Authorization: Bearer`` header, or — for a browser — the
``outlay_dashboard`` cookie set by ``/dashboard/login``. Only a POSTed form from the dashboard itself
logs a browser in: a POST another site sent is refused (see :func:`_sent_by_another_site`), and a
link ``?token=`` only parks its token in a short-lived cookie and redirects to a confirmation, whose
button POSTs — otherwise any site could log its visitors in to the site's own tenant (login CSRF).
The redirect keeps the token out of the tab's history and of every URL a page is shown at. The
cookie is HttpOnly and SameSite=Strict (Secure over HTTPS); every dashboard page is a read-only GET,
so there is nothing else for another site to forge.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from outlay._errors import BackendError, Forbidden, InvalidInput, NotFound, Unauthenticated
from outlay.api._auth import ApiTokens, Principal
from outlay.api._endpoint import Reply
from outlay.api._params import Query

from ._context import PAGE_PARAMS, Context
from ._finance_view import finance_view
from ._html import LOGIN_REFERRER, confirm_login_page, login_page, message_page, refused_login_page, url
from ._tenant_view import tenant_view

__all__ = ["COOKIE", "PENDING", "PENDING_SECONDS", "dashboard_routes"]

COOKIE: Final = "outlay_dashboard"
#: The cookie a login link parks its token in until the user confirms (see :func:`_park`).
PENDING: Final = "outlay_login"
PENDING_SECONDS: Final = 300
_LOGIN_PATH: Final = "/dashboard/login"
_PENDING_PATH: Final = _LOGIN_PATH
_EXPIRED: Final = (
    "This login link has expired or was already used: a link is good for "
    f"{PENDING_SECONDS // 60} minutes after you open it. Open the link again, or paste the token."
)
_REPLACED: Final = (
    "Another login link was opened after this confirmation was shown, so it was not used. "
    "Open your link again, or paste the token."
)
# The messages a login link can redirect to, by name: the URL never carries text of its own.
_LINK_ERRORS: Final = {"token": "unknown token: the login link's token is not valid (any more)"}
_MAX_FORM: Final = 4096
_EXPORT_PATH: Final = "/api/v1/tenants/{tenant}/export.csv"
# Nothing may be fetched from anywhere: no script at all, styles only inline, forms only to us; no
# page in a frame (X-Frame-Options for browsers without frame-ancestors), so no button of ours can be
# clickjacked — the login confirmation's least of all.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOGIN_HEADERS: Final = {**_HEADERS, "Referrer-Policy": LOGIN_REFERRER}
# Sec-Fetch-Site values of a request the dashboard itself (or the user, typing or from a bookmark) made.
_OWN_SITE: Final = frozenset({"same-origin", "none"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_log = logging.getLogger("outlay.dashboard")


def _now() -> float:
    return time.time()


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _login_html(body: str, status: int = 200) -> HTMLResponse:
    """A page with a login form (see ``LOGIN_REFERRER``)."""
    return HTMLResponse(body, status_code=status, headers=_LOGIN_HEADERS)


def _principal(request: Request) -> Principal:
    tokens: ApiTokens = request.app.state.tokens
    header = request.headers.get("authorization")
    if header:
        return tokens.authenticate(header)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return tokens.authenticate(f"Bearer {cookie}")
    raise Unauthenticated("log in with an API token", reason="missing")


def _context(request: Request, principal: Principal) -> Context:
    state = request.app.state
    return Context(state.outlay, principal, state.endpoints, state.catch_up_lock)


def _error_page(exc: Exception, request: Request) -> Response:
    if isinstance(exc, Unauthenticated):
        response = _login_html(login_page(exc.message, next_path=_safe_next(request.url.path)), 401)
        if request.cookies.get(COOKIE):  # a stale or revoked token: forget it
            response.delete_cookie(COOKIE, path="/dashboard")
        return response
    if isinstance(exc, NotFound):
        return _html(message_page("Not found", str(exc).removeprefix(f"{exc.field}: "), field=exc.field), 404)
    if isinstance(exc, InvalidInput):
        return _html(
            message_page("Bad request", str(exc).removeprefix(f"{exc.field}: "), field=exc.field), 400
        )
    if isinstance(exc, Forbidden):
        return _html(message_page("Forbidden", exc.message), 403)
    if isinstance(exc, BackendError):
        _log.warning("backend error while serving the dashboard: %s", exc)
        return _html(message_page("Unavailable", "the ledger is not available; retry later"), 503)
    _log.exception("unexpected error while serving the dashboard")
    return _html(message_page("Error", "internal error; see the server log"), 500)


def _params(request: Request) -> list[tuple[str, str]]:
    """The query string with blank values dropped: the filters form sends every field, and a field
    left empty (the environment's "all", a cleared date) means "not given", as the API reads an
    absent parameter — not a 400."""
    return [(name, value) for name, value in request.query_params.multi_items() if value != ""]


def _page(view: Callable[[Context, Query], str], name: str) -> Callable[[Request], object]:
    async def serve(request: Request) -> Response:
        try:
            principal = _principal(request)
            query = Query(_params(request), PAGE_PARAMS[name])
            body = await run_in_threadpool(view, _context(request, principal), query)
        except Exception as exc:  # every failure is a page with the right status, never a crash
            return _error_page(exc, request)
        return _html(body)

    return serve


async def _index(request: Request) -> Response:
    try:
        principal = _principal(request)
    except Unauthenticated as exc:
        return _error_page(exc, request)
    return RedirectResponse("/dashboard/finance" if principal.is_admin else "/dashboard/tenant", 303)


def _safe_next(raw: str | None) -> str:
    """Only a path inside the dashboard: a login link must not redirect to another site."""
    if not raw:
        return "/dashboard"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or "\\" in raw:
        return "/dashboard"
    segments = unquote(parts.path).split("/")
    # "/dashboard" or below it, with no dot segment that a browser would resolve out of it.
    if segments[:2] != ["", "dashboard"] or any(s in (".", "..") for s in segments):
        return "/dashboard"
    if segments[2:3] == ["login"]:
        return "/dashboard"
    return raw


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def _sent_by_another_site(request: Request) -> str | None:
    """Why a login POST must be refused as sent by another site, or ``None`` if it may be ours.

    ``Sec-Fetch-Site`` first: the browser sets it, a site cannot, and a reverse proxy passes it on
    unchanged (browsers send it over HTTPS and to localhost). Without it, the ``Origin`` must be
    our own — as this server sees itself, so a proxy that rewrites ``Host`` or terminates TLS
    without ``X-Forwarded-Proto`` makes a same-origin form look foreign (docs/dashboard.md). No
    header at all is not a browser's form (a script, curl), which another site cannot make send a
    request from its visitor's browser."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site.strip().lower() in _OWN_SITE else f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    own = _origin(str(request.url))
    if own is None or _origin(origin) != own:
        return f"Origin: {origin} (this server is {request.url.scheme}://{request.url.netloc})"
    return None


def _pending_value(token: str) -> str:
    return f"{secrets.token_urlsafe(16)}.{int(_now()) + PENDING_SECONDS}.{token}"


def _pending(request: Request) -> tuple[str, str] | None:
    """The parked login's ``(nonce, token)``, or ``None`` when there is none or it is past its
    time. The server keeps the time, not the browser: the cookie is a session cookie (a browser
    writes a cookie with an expiry to disk), so it would otherwise live as long as the browser."""
    nonce, _, rest = request.cookies.get(PENDING, "").partition(".")
    expires, _, token = rest.partition(".")
    if not nonce or not token or not expires.isdigit() or int(expires) < _now():
        return None
    return nonce, token


def _forget_pending(response: Response) -> Response:
    response.delete_cookie(PENDING, path=_PENDING_PATH)
    return response


def _expired(target: str, request: Request) -> Response:
    _log.info("a dashboard login link was confirmed with no pending login (expired or used)")
    response = _login_html(login_page(_EXPIRED, next_path=target), 401)
    return _forget_pending(response) if PENDING in request.cookies else response


def _park(request: Request, token: str, target: str) -> Response:
    """A login link: validate its token, park it in a cookie only ``/dashboard/login`` receives,
    and send the browser on to the confirmation at a URL without the token. The link's URL then
    is a redirect, which replaces it in the tab's history, instead of a page."""
    tokens: ApiTokens = request.app.state.tokens
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    try:
        tokens.authenticate(f"Bearer {token}")
    except Unauthenticated:
        # Not even a wrong token stays in a URL: it may be a real one with a typo.
        failed = url(_LOGIN_PATH, {"next": target, "error": "token"})
        return _forget_pending(RedirectResponse(failed, 303, headers=headers))
    response = RedirectResponse(url(_LOGIN_PATH, {"confirm": "1", "next": target}), 303, headers=headers)
    response.set_cookie(
        PENDING,
        _pending_value(token),
        path=_PENDING_PATH,
        httponly=True,
        # Lax, not Strict: the link is usually opened from another site (a mail, a chat), and the
        # browser does not send a Strict cookie on the redirect that follows such a navigation,
        # so the confirmation would never see it. Lax is enough: it goes only with top-level GETs
        # from other sites, which at most show the confirmation; the login itself is a POST,
        # refused from another site (see docs/dashboard.md, "Cross-site logins").
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def _confirm(request: Request, target: str) -> Response:
    """The page a login link leads to: who the parked token logs in as, and a button that POSTs
    the parked login's nonce (never the token) back here."""
    pending = _pending(request)
    if pending is None:
        return _expired(target, request)
    nonce, token = pending
    tokens: ApiTokens = request.app.state.tokens
    try:
        principal = tokens.authenticate(f"Bearer {token}")
    except Unauthenticated as exc:  # revoked since the link was opened
        return _forget_pending(_login_html(login_page(exc.message, next_path=target), 401))
    who = "admin" if principal.is_admin else f"tenant {principal.tenant}"
    return _login_html(confirm_login_page(f"{who} ({principal.name})", nonce, next_path=target))


async def _login(request: Request) -> Response:
    if request.method == "POST":
        why = _sent_by_another_site(request)
        if why is not None:
            _log.warning("refused a dashboard login sent by another site (%s)", why)
            return _html(refused_login_page(), 403)
        body = await request.body()
        if len(body) > _MAX_FORM:
            return _login_html(login_page("the form is too large"), 400)
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
    else:
        form = dict(request.query_params)
    target = _safe_next(form.get("next"))
    token = (form.get("token") or "").strip()
    if request.method != "POST":
        if token:
            return _park(request, token, target)
        if form.get("confirm"):
            return _confirm(request, target)
        message = _LINK_ERRORS.get(form.get("error", ""))
        return _login_html(login_page(message, next_path=target), 200 if message is None else 401)
    if not token and "pending" in form:  # the confirmation's button
        pending = _pending(request)
        if pending is None:
            return _expired(target, request)
        nonce, token = pending
        if not hmac.compare_digest(nonce.encode(), form["pending"].encode()):
            # Another link was opened since the confirmation was shown (maybe another site's, in
            # another tab): its token is not the one the page named.
            _log.warning("refused a dashboard login confirmed for another pending login")
            return _forget_pending(_login_html(login_page(_REPLACED, next_path=target), 401))
    if not token:
        return _login_html(login_page(next_path=target))
    tokens: ApiTokens = request.app.state.tokens
    try:
        tokens.authenticate(f"Bearer {token}")
    except Unauthenticated as exc:
        failed = _login_html(login_page(exc.message, next_path=target), 401)
        return _forget_pending(failed) if PENDING in request.cookies else failed
    response = RedirectResponse(
        target, 303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )
    response.set_cookie(
        COOKIE,
        token,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return _forget_pending(response) if PENDING in request.cookies else response


async def _logout(request: Request) -> Response:
    response = RedirectResponse("/dashboard/login", 303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


async def _export(request: Request) -> Response:
    """The API's CSV export, reachable with the dashboard cookie (a link cannot send a header)."""
    try:
        principal = _principal(request)
        query = Query(_params(request), ("tenant", "period", "what", "environment"))
        tenant = principal.scope_tenant(query.get("tenant"))
        if tenant is None:
            raise InvalidInput("is required", field="tenant")
        params = {k: query.get(k) for k in ("period", "what", "environment")}
        reply = await run_in_threadpool(_context(request, principal).api, _EXPORT_PATH, params, tenant=tenant)
    except Exception as exc:
        return _error_page(exc, request)
    assert isinstance(reply, Reply)
    return Response(
        reply.body,
        reply.status,
        {**reply.headers, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        media_type=reply.media_type,
    )


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard, as routes to add to :func:`outlay.api.create_app` (which mounts them by
    default). They read ``outlay``, ``tokens``, ``endpoints`` and ``catch_up_lock`` from the app's
    state."""
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/login", _login, methods=["GET", "POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Route("/finance", _page(finance_view, "finance"), methods=["GET"]),
        Route("/tenant", _page(tenant_view, "tenant"), methods=["GET"]),
        Route("/export.csv", _export, methods=["GET"]),
    ]
    return [Route("/dashboard", _index, methods=["GET"]), Mount("/dashboard", routes=routes)]
