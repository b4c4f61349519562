"""Isolation cases of the finance, period and audit endpoints (merged into test_isolation.CASES)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx

from .conftest import ACME, ADMIN, GLOBEX_MARKERS, WINDOW, auth, cloud

Check = Callable[[httpx.AsyncClient], Awaitable[None]]

PLANS = """
[tenants.acme]
model = "flat"
monthly_fee = "10"

[tenants.globex]
model = "per_seat"
seat_price = "2"
seats = 3
"""


@contextmanager
def plans_file(text: str = PLANS) -> Iterator[Path]:
    """``$OUTLAY_PLANS`` pointing at ``text`` for the duration (restored afterwards)."""
    old = os.environ.get("OUTLAY_PLANS")
    with TemporaryDirectory() as folder:
        path = Path(folder) / "plans.toml"
        path.write_text(text)
        os.environ["OUTLAY_PLANS"] = str(path)
        try:
            yield path
        finally:
            if old is None:
                del os.environ["OUTLAY_PLANS"]
            else:
                os.environ["OUTLAY_PLANS"] = old


def clean(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    for marker in GLOBEX_MARKERS:
        assert marker not in r.text.lower(), (marker, r.request.url, r.text[:300])


async def acme(client: httpx.AsyncClient, method: str, path: str, **params: str) -> httpx.Response:
    r = await client.request(method, path, params=params, headers=auth(ACME))
    clean(r)
    return r


async def check_margins(client: httpx.AsyncClient) -> None:
    with plans_file():
        assert (await acme(client, "GET", "/api/v1/finance/margins", period="2026-03")).status_code == 403
        r = await client.get("/api/v1/finance/margins", params={"period": "2026-03"}, headers=auth(ADMIN))
        assert r.status_code == 200 and {row["tenant"] for row in r.json()["rows"]} >= {"acme", "globex"}


async def check_spikes(client: httpx.AsyncClient) -> None:
    params = {**WINDOW, "min": "0", "factor": "1"}
    r = await acme(client, "GET", "/api/v1/finance/spikes", **params)
    assert r.status_code == 200 and {s["tenant"] for s in r.json()["spikes"]} == {"acme"}
    by_agent = await acme(client, "GET", "/api/v1/finance/spikes", **params, by="agent")
    assert by_agent.json()["spikes"] and {s["tenant"] for s in by_agent.json()["spikes"]} == {"acme"}
    assert (await acme(client, "GET", "/api/v1/finance/spikes", **params, tenant="globex")).status_code == 403
    admin = await client.get("/api/v1/finance/spikes", params=params, headers=auth(ADMIN))
    assert "globex" in {s["tenant"] for s in admin.json()["spikes"]}  # the admin does see globex


async def check_runaway(client: httpx.AsyncClient) -> None:
    # two more acme runs, one of them expensive; acme's own view of acme-run leaves globex's child out
    extra = [cloud(run_id="r1", root_run_id="r1"), cloud(run_id="r2", root_run_id="r2", cost=Decimal(5))]
    assert (await client.post("/api/v1/events", json=extra, headers=auth(ACME))).status_code == 200
    params = {**WINDOW, "min_runs": "2", "factor": "3"}
    r = await acme(client, "GET", "/api/v1/finance/runaway-runs", **params)
    assert r.status_code == 200
    assert [(run["run_id"], run["cost"], run["agent_median"]) for run in r.json()["runs"]] == [
        ("r2", "5", "0.2")
    ]
    other = await acme(client, "GET", "/api/v1/finance/runaway-runs", **params, tenant="globex")
    assert other.status_code == 403


async def check_simulate(client: httpx.AsyncClient) -> None:
    body = {"period": "2026-03", "markup": "1.5"}
    r = await client.post("/api/v1/finance/simulate", json=body, headers=auth(ACME))
    clean(r)
    assert r.status_code == 403
    admin = await client.post("/api/v1/finance/simulate", json=body, headers=auth(ADMIN))
    assert admin.status_code == 200 and {row["tenant"] for row in admin.json()["rows"]} == {"acme", "globex"}


async def check_close(client: httpx.AsyncClient) -> None:
    assert (await acme(client, "POST", "/api/v1/periods/2026-03/close")).status_code == 403
    assert (await acme(client, "GET", "/api/v1/periods/2026-03")).status_code == 404  # still open
    r = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert r.status_code == 201 and r.json()["created"]


async def check_seal(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    own = await acme(client, "GET", "/api/v1/periods/2026-03")
    assert own.status_code == 200 and own.json()["tenant"] == "acme" and own.json()["verified"]
    assert "tenants" not in own.json()  # nothing about other tenants, not even their hashes
    admin = await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))
    assert set(admin.json()["tenants"]) == {"acme", "globex"}
    assert admin.json()["tenants"]["acme"]["sha256"] == own.json()["sha256"]


async def check_audit(client: httpx.AsyncClient) -> None:
    own = await acme(client, "GET", "/api/v1/tenants/acme/audit.csv", period="2026-03")
    assert own.status_code == 200 and "x-outlay-seal" not in own.headers
    assert own.text.count("\n") > 1 and ",acme," in own.text
    theirs = await acme(client, "GET", "/api/v1/tenants/globex/audit.csv", period="2026-03")
    assert theirs.status_code == 403
    await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    sealed = await acme(client, "GET", "/api/v1/tenants/acme/audit.csv", period="2026-03")
    assert "tenant=acme" in sealed.headers["x-outlay-seal"]


FINANCE_CASES: dict[tuple[str, str], Check] = {
    ("GET", "/api/v1/finance/margins"): check_margins,
    ("GET", "/api/v1/finance/spikes"): check_spikes,
    ("GET", "/api/v1/finance/runaway-runs"): check_runaway,
    ("POST", "/api/v1/finance/simulate"): check_simulate,
    ("POST", "/api/v1/periods/{period}/close"): check_close,
    ("GET", "/api/v1/periods/{period}"): check_seal,
    ("GET", "/api/v1/tenants/{tenant}/audit.csv"): check_audit,
}
