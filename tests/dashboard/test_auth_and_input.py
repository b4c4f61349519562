"""Logging in, the cookie, and bad input: every failure is a page with the right 4xx."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette

from outlay.api._auth import ApiTokens
from outlay.dashboard import _routes

from .conftest import ADMIN, TOKENS, TOKENS_BY_TENANT, WINDOW, auth

QUOKKA = TOKENS_BY_TENANT["quokka-labs"]


@pytest.mark.parametrize(
    "path", ["/dashboard", "/dashboard/finance", "/dashboard/tenant", "/dashboard/export.csv"]
)
async def test_no_token_gets_the_login_page_with_401(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 401
    assert 'name="token"' in r.text and 'type="password"' in r.text


async def test_an_unknown_token_is_401_and_shows_nothing(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/finance", params=WINDOW, headers=auth("not-a-real-token-000000"))
    assert r.status_code == 401 and "zanzibar" not in r.text


async def _follow_link(client: httpx.AsyncClient, token: str, target: str = "/dashboard") -> httpx.Response:
    """Open a login link: the redirect it answers, then the confirmation it leads to."""
    r = await client.get("/dashboard/login", params={"token": token, "next": target})
    assert r.status_code == 303
    return await client.get(r.headers["location"])


def _hidden_fields(page: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="/dashboard/login"[^>]*>(.*?)</form>', page)
    assert form is not None and form.group(1).count("<button") == 1
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(1)))


async def test_a_login_link_parks_its_token_and_asks_at_a_url_without_it(client: httpx.AsyncClient) -> None:
    target = "/dashboard/tenant?from=2026-03-01"
    r = await client.get("/dashboard/login", params={"token": QUOKKA, "next": target})
    # A redirect, which replaces the link in the tab's history, to a URL without the token; the
    # token waits in a cookie only the login receives. Nobody is logged in yet.
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?" + urlencode({"confirm": "1", "next": target})
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    (parked,) = r.headers.get_list("set-cookie")
    assert parked.startswith("outlay_login=") and QUOKKA in parked
    assert "HttpOnly" in parked and "SameSite=lax" in parked and "Path=/dashboard/login" in parked
    # A session cookie: a browser writes a cookie with an expiry to disk. The server keeps the time.
    assert "max-age" not in parked.lower() and "expires" not in parked.lower()
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401

    r = await client.get(r.headers["location"])
    # The confirmation names the account; its one button POSTs a nonce, never the token, and
    # nothing on the page carries the token.
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert "as <strong>tenant quokka-labs (quokka-labs-app)</strong>?" in r.text
    assert r.headers["cache-control"] == "no-store"
    assert QUOKKA not in r.text
    fields = _hidden_fields(r.text)
    assert set(fields) == {"pending", "next"} and fields["next"] == html.escape(target)
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401

    r = await client.post("/dashboard/login", data={**fields, "next": target})
    assert r.status_code == 303 and r.headers["location"] == target
    session, cleared = sorted(r.headers.get_list("set-cookie"))
    assert session.startswith("outlay_dashboard=")
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/dashboard;" in session
    assert cleared.startswith('outlay_login=""') and "Path=/dashboard/login" in cleared
    page = await client.get("/dashboard/tenant", params=WINDOW)  # the client keeps the cookie
    assert page.status_code == 200 and "hop-summarize" in page.text
    assert QUOKKA not in page.text
    # The parked login is used up: pressing the button again (back, resubmit) asks for the link.
    again = await client.post("/dashboard/login", data=fields)
    assert again.status_code == 401 and "expired or was already used" in again.text


async def test_a_login_link_for_the_admin_says_so(client: httpx.AsyncClient) -> None:
    r = await _follow_link(client, ADMIN)
    assert r.status_code == 200 and "as <strong>admin (finance)</strong>?" in r.text
    assert 'name="next" value="/dashboard"' in r.text


async def test_a_login_link_with_a_wrong_token_parks_nothing_and_keeps_no_token_in_the_url(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/dashboard/login", params={"token": "wrong-token-0000000000", "next": "/dashboard"})
    assert r.status_code == 303 and "wrong-token" not in r.headers["location"]
    assert "outlay_login" not in client.cookies
    r = await client.get(r.headers["location"])
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "unknown token" in r.text and "wrong-token" not in r.text and "?</p>" not in r.text
    assert 'type="password" name="token"' in r.text  # the form, to paste the right one
    # The message is chosen by name: the URL cannot put words of its own on the page.
    r = await client.get("/dashboard/login", params={"error": "your account is locked, call +1 555"})
    assert r.status_code == 200 and "555" not in r.text


async def test_a_confirmation_without_its_parked_login_asks_to_open_the_link_again(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/dashboard/login", params={"confirm": "1", "next": "/dashboard/tenant"})
    assert r.status_code == 401 and "expired or was already used" in r.text
    assert "Open the link again, or paste the token" in r.text and 'name="pending"' not in r.text
    assert 'name="next" value="/dashboard/tenant"' in r.text  # the form still leads there
    r = await client.post("/dashboard/login", data={"pending": "anything", "next": "/dashboard"})
    assert r.status_code == 401 and "expired or was already used" in r.text
    assert "set-cookie" not in r.headers
    # A cookie that is not a parked login (tampered, or from an older version) is no login either.
    client.cookies.set("outlay_login", QUOKKA, path="/dashboard/login")
    r = await client.get("/dashboard/login", params={"confirm": "1"})
    assert r.status_code == 401 and "expired" in r.text and 'outlay_login=""' in r.headers["set-cookie"]


async def test_a_parked_login_expires_after_five_minutes(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = time.time()
    monkeypatch.setattr(_routes, "_now", lambda: start)
    page = await _follow_link(client, QUOKKA)
    fields = _hidden_fields(page.text)
    monkeypatch.setattr(_routes, "_now", lambda: start + 299)
    assert "as <strong>tenant quokka-labs" in (await client.get("/dashboard/login?confirm=1")).text
    monkeypatch.setattr(_routes, "_now", lambda: start + 301)
    r = await client.post("/dashboard/login", data=fields)
    assert r.status_code == 401 and "good for 5 minutes" in r.text
    assert "outlay_dashboard=" not in r.headers["set-cookie"]  # only the parked login cleared
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401


async def test_a_parked_token_revoked_before_the_button_logs_nobody_in(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    fields = _hidden_fields((await _follow_link(client, QUOKKA)).text)
    # The tokens file changed: quokka's token is gone.
    app.state.tokens = ApiTokens.from_entries([t for t in TOKENS if t["token"] != QUOKKA])
    r = await client.post("/dashboard/login", data=fields)
    assert r.status_code == 401 and "unknown token" in r.text
    assert "outlay_login" not in client.cookies and "outlay_dashboard" not in client.cookies
    r = await _follow_link(client, QUOKKA)  # the link itself, opened again
    assert r.status_code == 401 and "unknown token" in r.text and "outlay_login" not in client.cookies


async def test_a_confirmation_logs_in_only_as_the_account_it_named(client: httpx.AsyncClient) -> None:
    # The user's page names quokka; then another link (another site's, in another tab) parks
    # zanzibar's token. The quokka page's button must not log in as zanzibar.
    fields = _hidden_fields((await _follow_link(client, QUOKKA)).text)
    await client.get("/dashboard/login", params={"token": TOKENS_BY_TENANT["zanzibar-co"]})
    r = await client.post("/dashboard/login", data=fields)
    assert r.status_code == 401 and "Another login link was opened" in r.text
    assert "outlay_dashboard=" not in r.headers["set-cookie"] and "outlay_login" not in client.cookies
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401


async def test_another_sites_post_of_a_parked_login_is_refused(client: httpx.AsyncClient) -> None:
    # Another site's link parked its token here; its auto-submitting form cannot press the button.
    fields = _hidden_fields((await _follow_link(client, QUOKKA)).text)
    r = await client.post("/dashboard/login", data=fields, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another site's code too
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://dash"},  # the browser's word wins
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, or a page under no-referrer
        {"Origin": "https://dash"},  # our host, but not our scheme
        {"Origin": "http://dash:8080"},
        {"Origin": "garbage"},
    ],
)
async def test_a_login_form_another_site_sends_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    # An auto-submitting form on another site, with the attacker's own (valid) token: the victim's
    # browser must not end up in the attacker's tenant.
    r = await client.post(
        "/dashboard/login", data={"token": QUOKKA, "next": "/dashboard/tenant"}, headers=headers
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert "<h1>Login refused</h1>" in r.text and "another web site" in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://dash"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "null"},  # a form under no-referrer
        # Behind a proxy that rewrites Host, the browser's Sec-Fetch-Site still says who sent it.
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://dashboard.example.com"},
        {"Sec-Fetch-Site": "none"},  # typed or bookmarked by the user
        {"Origin": "http://dash"},  # plain HTTP to a non-local host: no Sec-Fetch-Site
        {"Origin": "http://DASH:80"},
        {},  # a script or curl: no browser, nobody else's site
    ],
)
async def test_a_login_form_from_the_dashboard_itself_logs_in(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post(
        "/dashboard/login", data={"token": QUOKKA, "next": "/dashboard/tenant"}, headers=headers
    )
    assert r.status_code == 303 and "outlay_dashboard=" in r.headers["set-cookie"]
    assert (await client.get("/dashboard/tenant", params=WINDOW)).status_code == 200


@pytest.mark.parametrize("path", ["/dashboard/login", "/dashboard/finance"])
async def test_login_pages_cannot_be_framed_and_send_their_own_origin(
    client: httpx.AsyncClient, path: str
) -> None:
    # The confirmation too, which is the page a clickjacker would want in a frame.
    for r in (await client.get(path), await _follow_link(client, QUOKKA)):
        assert '<form method="post" action="/dashboard/login"' in r.text
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        # Not no-referrer: under it the form's POST has "Origin: null", refused over plain HTTP
        # where no Sec-Fetch-Site is sent; strict-origin never sends a path, so never the token.
        assert r.headers["referrer-policy"] == "strict-origin"
        assert '<meta name="referrer" content="strict-origin">' in r.text


async def test_login_by_form_post_then_logout(client: httpx.AsyncClient) -> None:
    r = await client.post("/dashboard/login", data={"token": ADMIN, "next": "/dashboard/finance"})
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard/finance")
    assert (await client.get("/dashboard/finance", params=WINDOW)).status_code == 200
    out = await client.post("/dashboard/logout")
    assert out.status_code == 303
    assert (await client.get("/dashboard/finance", params=WINDOW)).status_code == 401


async def test_a_wrong_token_at_login_sets_no_cookie(client: httpx.AsyncClient) -> None:
    r = await client.post("/dashboard/login", data={"token": "wrong-token-0000000000"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "unknown token" in r.text


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/api/v1/me",
        "/\\evil.example",
        "/dashboard/../api/v1/me",  # a browser resolves the dot segments out of the dashboard
        "/dashboard/%2e%2e/api/v1/me",
        "/dashboardx",
    ],
)
async def test_login_never_redirects_off_the_dashboard(client: httpx.AsyncClient, target: str) -> None:
    r = await _follow_link(client, ADMIN, target)
    assert r.status_code == 200 and '<input type="hidden" name="next" value="/dashboard">' in r.text
    r = await client.post("/dashboard/login", data={"token": ADMIN, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"


async def test_a_stale_cookie_is_cleared(client: httpx.AsyncClient) -> None:
    client.cookies.set("outlay_dashboard", "revoked-token-000000000", path="/dashboard")
    r = await client.get("/dashboard/finance")
    assert r.status_code == 401
    assert 'outlay_dashboard=""' in r.headers["set-cookie"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-10", "to": "2026-03-01"}, "to"),
        ({"environment": "moon"}, "environment"),
        ({"tennant": "acme"}, "tennant"),
        ({"from": "2026-03-01' OR '1'='1"}, "from"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    for path, token in (("/dashboard/finance", ADMIN), ("/dashboard/tenant", QUOKKA)):
        r = await client.get(path, params=params, headers=auth(token))
        assert r.status_code == 400, (path, params)
        assert f"<code>{field}</code>" in r.text


async def test_the_filters_form_submitted_as_is_is_not_an_error(client: httpx.AsyncClient) -> None:
    # A browser sends every field of the form, the blank ones too: the environment's default option
    # ("all") and a cleared date are "not given", as they would be for the API — not a 400.
    blank = {"environment": "", "period": ""}
    for path, params, token in (
        ("/dashboard/finance", {**WINDOW, **blank}, ADMIN),
        ("/dashboard/tenant", {**WINDOW, **blank}, QUOKKA),
        ("/dashboard/tenant", {**WINDOW, **blank, "tenant": "quokka-labs"}, ADMIN),
        ("/dashboard/tenant", {"from": "", "to": WINDOW["to"], **blank}, QUOKKA),
    ):
        page = await client.get(path, params=params, headers=auth(token))
        assert page.status_code == 200, (path, params, page.text[-300:])
    first = await client.get("/dashboard/tenant", params=WINDOW, headers=auth(QUOKKA))
    assert 'name="environment"><option value="" selected>' in first.text  # what the form sends
    r = await client.get(
        "/dashboard/export.csv",
        params={"tenant": "quokka-labs", "period": "2026-03", "environment": ""},
        headers=auth(QUOKKA),
    )
    assert r.status_code == 200
    # The tenant's own strings, as CSV: a browser must not guess them into a page.
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_bad_period_and_unknown_tenant(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/tenant", params={**WINDOW, "period": "2026-13"}, headers=auth(QUOKKA))
    assert r.status_code == 400 and "<code>period</code>" in r.text
    r = await client.get("/dashboard/tenant", params={"tenant": "nobody' OR 1=1 --"}, headers=auth(ADMIN))
    assert r.status_code == 404 and "<code>tenant</code>" in r.text
    r = await client.get("/dashboard/export.csv", params={"period": "2026-03"}, headers=auth(ADMIN))
    assert r.status_code == 400 and "<code>tenant</code>" in r.text
    r = await client.get(
        "/dashboard/export.csv",
        params={"tenant": "quokka-labs", "period": "2026-03", "what": "everything"},
        headers=auth(QUOKKA),
    )
    assert r.status_code == 400 and "<code>what</code>" in r.text


async def test_an_oversized_login_form_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/dashboard/login",
        content=b"token=" + b"x" * 10_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
