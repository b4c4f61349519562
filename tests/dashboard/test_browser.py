"""The dashboard in a real headless Chromium, served by a real uvicorn: both views load through a
login link (the confirmation page, its button pressed), render their charts, and are kept as PNGs in
test-artifacts/. Chromium is driven by chromedriver's W3C WebDriver API over plain HTTP: pressing a
button is what ``--dump-dom`` cannot do, and the dashboard runs no script that could do it."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.applications import Starlette

from .conftest import ADMIN, MARKERS, TOKENS_BY_TENANT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    """Skip without Debian's chromium and chromium-driver; fail instead in CI
    (OUTLAY_REQUIRE_SERVICES=1)."""
    if CHROMIUM is not None and CHROMEDRIVER is not None:
        return
    reason = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OUTLAY_REQUIRE_SERVICES=1: the browser tests are required here)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def server(app: Starlette) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:  # wait for the socket, not a fixed sleep
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


class Browser:
    """One headless Chromium session, through just the WebDriver commands these tests need."""

    def __init__(self, driver: str, profile: Path | None = None) -> None:
        self._driver = driver
        flags = [] if profile is None else [f"--user-data-dir={profile}"]
        flags += ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        flags += ["--window-size=1280,900", "--hide-scrollbars"]
        options = {"args": flags, "binary": CHROMIUM}
        capabilities = {"alwaysMatch": {"goog:chromeOptions": options, "pageLoadStrategy": "normal"}}
        session = self._call("POST", "/session", {"capabilities": capabilities})
        self._session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None and method == "GET" else json.dumps(body or {}).encode()
        request = urllib.request.Request(
            self._driver + path, data, {"Content-Type": "application/json"}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return json.load(answer)["value"]
        except urllib.error.HTTPError as exc:
            pytest.fail(f"WebDriver {method} {path}: {exc.code} {exc.read()[:2000]!r}")

    def get(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def _element(self, css: str) -> str:
        found = self._call("POST", f"{self._session}/element", {"using": "css selector", "value": css})
        return f"{self._session}/element/{found[_ELEMENT]}"

    def click(self, css: str) -> None:
        """Press the element, as a user's mouse does."""
        self._call("POST", f"{self._element(css)}/click")

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"{self._element(css)}/value", {"text": text})

    def dom(self) -> str:
        source: str = self._call("GET", f"{self._session}/source")
        return source

    def dom_with(self, text: str) -> str:
        """The DOM once it contains ``text``: after a click the new page may still be loading
        (chromedriver does not wait for every navigation, e.g. from a ``file:`` page)."""
        deadline = time.monotonic() + 30
        while text not in (dom := self.dom()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return dom

    def url(self) -> str:
        current: str = self._call("GET", f"{self._session}/url")
        return current

    def back(self) -> None:
        self._call("POST", f"{self._session}/back")

    def window(self) -> str:
        handle: str = self._call("GET", f"{self._session}/window")
        return handle

    def new_window(self) -> str:
        """Open a tab and switch to it; its handle."""
        handle: str = self._call("POST", f"{self._session}/window/new", {"type": "tab"})["handle"]
        self.switch_to(handle)
        return handle

    def switch_to(self, handle: str) -> None:
        self._call("POST", f"{self._session}/window", {"handle": handle})

    def screenshot(self, target: Path, height: int = 900) -> None:
        self._call("POST", f"{self._session}/window/rect", {"width": 1280, "height": height})
        target.write_bytes(base64.b64decode(self._call("GET", f"{self._session}/screenshot")))

    def close(self) -> None:
        """End the session, and so the browser: it then writes its profile (history) to disk."""
        if self._session:
            self._call("DELETE", self._session)
            self._session = ""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    assert CHROMEDRIVER is not None
    port = _free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:  # wait for chromedriver to answer, not a fixed sleep
        try:
            with urllib.request.urlopen(f"{base}/status", timeout=5) as answer:
                if json.load(answer)["value"]["ready"]:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or driver.poll() is not None:
            driver.kill()
            pytest.fail("chromedriver did not start")
        time.sleep(0.05)
    try:
        instance = Browser(base, tmp_path / "profile")
        try:
            yield instance
        finally:
            instance.close()
    finally:  # chromedriver ends the browser it started with the session, then itself
        driver.terminate()
        driver.wait(timeout=10)


def _login_url(base: str, token: str, target: str) -> str:
    return f"{base}/dashboard/login?{urlencode({'token': token, 'next': target})}"


def _log_in(browser: Browser, url: str, who: str, heading: str) -> str:
    """Follow a login link and press its confirmation's button, as a user would; the DOM of the
    page it leads to, once that shows ``heading``."""
    browser.get(url)
    confirm = browser.dom()
    assert f"Log in to the outlay dashboard as <strong>{who}" in confirm
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "dashboard-login-confirm.png", height=500)  # for a reviewer
    # The link answered with a redirect to a confirmation at a URL without the token.
    assert "token=" not in browser.url() and "confirm=1" in browser.url()
    browser.click('form[action="/dashboard/login"] button')
    dom = browser.dom_with(heading)
    assert "token=" not in browser.url()
    return dom


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Another web site: a plain HTTP server for ``localhost``, which is not the site of the
    dashboard's ``127.0.0.1``; its URL and the folder it serves."""
    folder = tmp_path / "other-site"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _screenshot(browser: Browser, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    target.unlink(missing_ok=True)
    browser.screenshot(target)
    assert target.exists() and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and the whole page, for a person reviewing the artefacts
    browser.screenshot(ARTIFACTS / name.replace(".png", "-full.png"), height=2600)
    return target


def test_finance_view_renders_in_chromium(
    server: str, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text('[tenants.zanzibar-co]\nmodel = "flat"\nmonthly_fee = "20"\n')
    monkeypatch.setenv("OUTLAY_PLANS", str(plans))  # the server thread reads it per request
    url = _login_url(server, ADMIN, "/dashboard/finance?from=2026-03-01&to=2026-04-01")
    dom = _log_in(browser, url, "admin", "<h1>Finance</h1>")
    # The browser posted the confirmation (cookie set, token gone) and parsed both charts.
    assert "<h1>Finance</h1>" in dom
    assert dom.count("<svg") == 2 and "<polyline" in dom and '<rect class="bar"' in dom
    assert all(tenant in dom for tenant in MARKERS)
    assert "12.23" in dom  # zanzibar's margin: 20 of revenue less 7.77
    png = _screenshot(browser, "dashboard-finance.png")
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_tenant_view_renders_in_chromium_without_other_tenants(server: str, browser: Browser) -> None:
    url = _login_url(
        server, TOKENS_BY_TENANT["quokka-labs"], "/dashboard/tenant?from=2026-03-01&to=2026-04-01"
    )
    dom = _log_in(browser, url, "tenant quokka-labs", "<h1>Usage · quokka-labs</h1>")
    assert "<h1>Usage · quokka-labs</h1>" in dom
    assert dom.count("<svg") == 4 and "hop-summarize" in dom
    for other in ("zanzibar-co", "vortigern-inc"):
        assert not any(marker in dom for marker in MARKERS[other])
    png = _screenshot(browser, "dashboard-tenant.png")
    assert png.stat().st_size > 20_000


def test_without_a_token_chromium_gets_the_login_form(server: str, browser: Browser) -> None:
    browser.get(f"{server}/dashboard/finance")
    dom = browser.dom()
    assert "<h1>Log in</h1>" in dom and "zanzibar" not in dom


def test_following_a_login_link_logs_chromium_in_to_nothing(server: str, browser: Browser) -> None:
    browser.get(_login_url(server, ADMIN, "/dashboard/finance"))  # e.g. a link another site opened
    browser.get(f"{server}/dashboard/finance")
    dom = browser.dom()
    assert "<h1>Log in</h1>" in dom and "zanzibar" not in dom


def test_a_login_form_on_another_site_does_not_log_chromium_in(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    # Another site's page posting its own valid token to the dashboard: a real cross-site POST,
    # with the headers a real browser sends.
    attacker = tmp_path / "attacker.html"
    attacker.write_text(
        f'<!doctype html><form method="post" action="{server}/dashboard/login">'
        f'<input type="hidden" name="token" value="{TOKENS_BY_TENANT["quokka-labs"]}">'
        '<input type="hidden" name="next" value="/dashboard/tenant">'
        '<button type="submit">Win a prize</button></form>'
    )
    browser.get(attacker.as_uri())
    browser.click("button")
    assert "<h1>Login refused</h1>" in browser.dom_with("<h1>")
    browser.get(f"{server}/dashboard/tenant")
    dom = browser.dom()
    assert "<h1>Log in</h1>" in dom and "hop-summarize" not in dom


def test_the_login_form_logs_chromium_in(server: str, browser: Browser) -> None:
    browser.get(f"{server}/dashboard/login?next=/dashboard/tenant%3Ffrom%3D2026-03-01%26to%3D2026-04-01")
    browser.type('input[name="token"]', TOKENS_BY_TENANT["quokka-labs"])
    browser.click('form[action="/dashboard/login"] button')
    dom = browser.dom_with("<h1>Usage")
    assert "<h1>Usage · quokka-labs</h1>" in dom and "hop-summarize" in dom


def test_a_login_link_in_another_sites_page_logs_chromium_in_after_confirming(
    server: str, browser: Browser, other_site: tuple[str, Path]
) -> None:
    # A link in a web mail or a chat: a navigation from another site. The parked token's cookie
    # must reach the confirmation the redirect leads to, which a SameSite=Strict cookie does not
    # (Chromium 156 leaves it off the redirect of a navigation another site started).
    site, folder = other_site
    link = _login_url(server, TOKENS_BY_TENANT["quokka-labs"], "/dashboard/tenant?from=2026-03-01")
    link = link.replace("&", "&amp;")
    (folder / "mail.html").write_text(f'<!doctype html><a id="link" href="{link}">your dashboard</a>')
    browser.get(f"{site}/mail.html")
    browser.click("#link")
    confirm = browser.dom_with("<h1>")
    assert "as <strong>tenant quokka-labs (quokka-labs-app)</strong>?" in confirm
    browser.click('form[action="/dashboard/login"] button')
    dom = browser.dom_with("<h1>Usage")
    assert "<h1>Usage · quokka-labs</h1>" in dom and "hop-summarize" in dom


def test_after_a_link_login_no_history_entry_holds_the_token(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    token = TOKENS_BY_TENANT["quokka-labs"]
    _log_in(browser, _login_url(server, token, "/dashboard/tenant"), "tenant quokka-labs", "<h1>Usage")
    # The tab's history: the target, then the confirmation (the link itself was a redirect).
    visited = [browser.url()]
    browser.back()
    visited.append(browser.url())
    # Back at the confirmation, which is not cached: the parked login is used up, nothing to press.
    dom = browser.dom_with("<h1>")
    assert "expired or was already used" in dom and 'name="pending"' not in dom
    assert visited[0].endswith("/dashboard/tenant") and "confirm=1" in visited[1]
    assert not any(token in url for url in visited)
    # The browser's history as its History page lists it (each redirect chain's end). The link's
    # own URL is kept in the History file too, as a hidden redirect source: a browser records a URL
    # it was sent to, whatever the server answers (docs/dashboard.md).
    browser.close()
    db = sqlite3.connect(tmp_path / "profile" / "Default" / "History")
    try:
        listed = db.execute(
            "SELECT urls.url FROM visits JOIN urls ON urls.id = visits.url WHERE visits.transition & ?",
            (0x20000000,),  # ui::PAGE_TRANSITION_CHAIN_END
        ).fetchall()
    finally:
        db.close()
    assert len(listed) >= 2 and not any(token in url for (url,) in listed), listed


def test_a_confirmation_logs_in_only_as_the_account_it_named(server: str, browser: Browser) -> None:
    # The user's own link shows their tenant; before they press the button, another site opens
    # its own link in another tab, which parks its token instead. The button must not log in to
    # that one, which the page never named.
    own = _login_url(server, TOKENS_BY_TENANT["quokka-labs"], "/dashboard/tenant")
    browser.get(own)
    assert "as <strong>tenant quokka-labs" in browser.dom()
    first = browser.window()
    browser.new_window()
    browser.get(_login_url(server, TOKENS_BY_TENANT["zanzibar-co"], "/dashboard/tenant"))
    browser.switch_to(first)
    browser.click('form[action="/dashboard/login"] button')
    assert "Another login link was opened" in browser.dom_with('class="error"')
    browser.get(f"{server}/dashboard/tenant")
    dom = browser.dom()
    assert "<h1>Log in</h1>" in dom and "spice-search" not in dom and "hop-summarize" not in dom
