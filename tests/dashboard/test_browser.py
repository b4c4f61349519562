"""The dashboard in a real headless Chromium, served by a real uvicorn: both views load through the
``?token=`` login redirect, render their charts, and are kept as PNGs in test-artifacts/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.applications import Starlette

from .conftest import ADMIN, MARKERS, TOKENS_BY_TENANT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    """Skip without Debian's chromium; fail instead in CI (OUTLAY_REQUIRE_SERVICES=1)."""
    if CHROMIUM is not None:
        return
    reason = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OUTLAY_REQUIRE_SERVICES=1: the browser tests are required here)")
    pytest.skip(reason)


@pytest.fixture
def server(app: Starlette) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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


def _chromium(tmp_path: Path, *args: str, size: str = "1280,900") -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={size}",
        "--hide-scrollbars",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def _login_url(base: str, token: str, target: str) -> str:
    return f"{base}/dashboard/login?{urlencode({'token': token, 'next': target})}"


def _dom(tmp_path: Path, url: str) -> str:
    done = _chromium(tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _screenshot(tmp_path: Path, url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    target.unlink(missing_ok=True)
    done = _chromium(tmp_path, f"--screenshot={target}", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert target.exists() and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and the whole page, for a person reviewing the artefacts
    full = ARTIFACTS / name.replace(".png", "-full.png")
    _chromium(tmp_path, f"--screenshot={full}", url, size="1280,2600")
    return target


def test_finance_view_renders_in_chromium(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text('[tenants.zanzibar-co]\nmodel = "flat"\nmonthly_fee = "20"\n')
    monkeypatch.setenv("OUTLAY_PLANS", str(plans))  # the server thread reads it per request
    url = _login_url(server, ADMIN, "/dashboard/finance?from=2026-03-01&to=2026-04-01")
    dom = _dom(tmp_path, url)
    # The browser followed the login redirect (cookie set, token gone) and parsed both charts.
    assert "<h1>Finance</h1>" in dom
    assert dom.count("<svg") == 2 and "<polyline" in dom and '<rect class="bar"' in dom
    assert all(tenant in dom for tenant in MARKERS)
    assert "12.23" in dom  # zanzibar's margin: 20 of revenue less 7.77
    png = _screenshot(tmp_path, url, "dashboard-finance.png")
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_tenant_view_renders_in_chromium_without_other_tenants(server: str, tmp_path: Path) -> None:
    url = _login_url(
        server, TOKENS_BY_TENANT["quokka-labs"], "/dashboard/tenant?from=2026-03-01&to=2026-04-01"
    )
    dom = _dom(tmp_path, url)
    assert "<h1>Usage · quokka-labs</h1>" in dom
    assert dom.count("<svg") == 4 and "hop-summarize" in dom
    for other in ("zanzibar-co", "vortigern-inc"):
        assert not any(marker in dom for marker in MARKERS[other])
    png = _screenshot(tmp_path, url, "dashboard-tenant.png")
    assert png.stat().st_size > 20_000


def test_without_a_token_chromium_gets_the_login_form(server: str, tmp_path: Path) -> None:
    dom = _dom(tmp_path, f"{server}/dashboard/finance")
    assert "<h1>Log in</h1>" in dom and "zanzibar" not in dom
