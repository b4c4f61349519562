"""Bad input gets a 4xx naming the field; injection attempts through every parameter do nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from outlay import Outlay
from outlay.api import ENDPOINTS, create_app
from outlay.ledger._postgres import PostgresLedger

from .conftest import ACME, ADMIN, GLOBEX, GLOBEX_MARKERS, TOKENS, WINDOW, auth, cloud, seed_events

INJECTIONS = (
    "' OR 1=1 --",
    "acme' OR '1'='1",
    "x'); DROP TABLE ledger_events; --",
    '" OR ""="',
    "%' OR tenant_id LIKE '%",
    "acme\x00",
    "1 UNION SELECT * FROM ledger_events",
)
GETS = [e for e in ENDPOINTS if e.method == "GET"]
CASES = [(e, name) for e in GETS for name in e.params]


def _empty(body: dict[str, Any]) -> bool:
    for key in ("rows", "events", "series", "decisions", "lines"):
        if key in body:
            return bool(body[key] == [])
    if "totals" in body:
        return bool(body["totals"]["events"] == 0)
    return False


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize(("endpoint", "param"), CASES, ids=lambda v: getattr(v, "path", v))
@pytest.mark.parametrize("token", [ADMIN, ACME], ids=["admin", "tenant"])
async def test_injection_through_every_parameter_has_no_effect(
    client: httpx.AsyncClient, endpoint: Any, param: str, payload: str, token: str
) -> None:
    path = endpoint.path.format(run_id="acme-run", tenant="acme")
    params = {**({"period": "2026-03"} if "period" in endpoint.params else WINDOW), param: payload}
    params = {k: v for k, v in params.items() if k in endpoint.params}
    r = await client.get(path, params=params, headers=auth(token))
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 400, 403, 404), r.text
    if r.status_code == 200:
        assert _empty(r.json()), (param, r.text[:300])
    else:
        assert r.json()["message"]
    if token == ACME:
        for marker in GLOBEX_MARKERS:
            assert marker not in r.text.lower()


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_through_path_parameters(client: httpx.AsyncClient, payload: str) -> None:
    for path in (
        f"/api/v1/runs/{quote(payload, safe='')}",
        f"/api/v1/tenants/{quote(payload, safe='')}/invoice",
    ):
        r = await client.get(path, params={"period": "2026-03"}, headers=auth(ADMIN))
        assert r.status_code in (400, 404), r.text
    # the ledger is intact afterwards
    r = await client.get("/api/v1/usage/totals", params=WINDOW, headers=auth(ADMIN))
    assert r.json()["totals"]["events"] == 12


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/v1/usage/totals", {"from": "yesterday"}, 400, "from"),
        ("/api/v1/usage/totals", {"from": "2026-03-05", "to": "2026-03-01"}, 400, "to"),
        ("/api/v1/usage/totals", {"from": "2026-03-05", "to": "2026-03-05"}, 400, "to"),
        ("/api/v1/usage/totals", {"from": "1066-10-14"}, 400, "from"),
        ("/api/v1/usage/totals", {"to": "2026-13-01"}, 400, "to"),
        ("/api/v1/usage/totals", {"environment": "prod"}, 400, "environment"),
        ("/api/v1/usage/totals", {"tennant": "acme"}, 400, "tennant"),
        ("/api/v1/usage/totals", {"tenant": "nobody"}, 404, "tenant"),
        ("/api/v1/usage/totals", {"feature": ""}, 400, "feature"),
        ("/api/v1/usage/totals", {"feature": "x" * 201}, 400, "feature"),
        ("/api/v1/usage/breakdown", {"by": "tenant,colour"}, 400, "by"),
        ("/api/v1/usage/breakdown", {"by": "tenant,tenant"}, 400, "by"),
        ("/api/v1/usage/breakdown", {"by": ""}, 400, "by"),
        ("/api/v1/usage/timeseries", {"by": "day"}, 400, "by"),
        ("/api/v1/usage/timeseries", {"from": "2000-01-01", "to": "2100-01-01"}, 400, "from"),
        ("/api/v1/events", {"limit": "0"}, 400, "limit"),
        ("/api/v1/events", {"limit": "1001"}, 400, "limit"),
        ("/api/v1/events", {"limit": "²"}, 400, "limit"),
        ("/api/v1/events", {"limit": "-1"}, 400, "limit"),
        ("/api/v1/tenants/acme/invoice", {}, 400, "period"),
        ("/api/v1/tenants/acme/invoice", {"period": "2026-3"}, 400, "period"),
        ("/api/v1/tenants/acme/invoice", {"period": "2026-13"}, 400, "period"),
        ("/api/v1/tenants/acme/invoice", {"period": "March"}, 400, "period"),
        ("/api/v1/tenants/acme/invoice", {"period": "２０２６-０３"}, 400, "period"),  # full-width digits
        ("/api/v1/tenants/acme/invoice", {"period": "2026-+3"}, 400, "period"),
        ("/api/v1/tenants/nobody/invoice", {"period": "2026-03"}, 404, "tenant"),
        ("/api/v1/budgets/decisions", {"kind": "exploded"}, 400, "kind"),
        ("/api/v1/budgets/decisions", {"tenant": "nobody"}, 404, "tenant"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    client: httpx.AsyncClient, path: str, params: dict[str, str], status: int, field: str
) -> None:
    r = await client.get(path, params=params, headers=auth(ADMIN))
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["message"]


async def test_repeated_parameter_and_unknown_route(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/usage/totals?tenant=acme&tenant=globex", headers=auth(ADMIN))
    assert r.status_code == 400 and r.json()["field"] == "tenant"
    r = await client.get("/api/v1/nothing", headers=auth(ADMIN))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.delete("/api/v1/events", headers=auth(ADMIN))
    assert r.status_code == 405


@pytest.fixture
async def pg_client(postgres_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the seeded events on a PostgreSQL ledger (a fresh schema, dropped after)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    ledger = PostgresLedger(postgres_url, schema=schema)
    outlay = Outlay("memory://", ledger=ledger)
    try:
        for e in seed_events():
            outlay.record(e)
        app = create_app(outlay, tokens=TOKENS)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            yield c
    finally:
        outlay.close()
        ledger.close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_an_id_in_the_path_no_event_could_hold_is_a_400_on_postgres(
    pg_client: httpx.AsyncClient,
) -> None:
    """PostgreSQL refuses a NUL in a text parameter: a path id holding one (``/runs/%00``) was a
    503 "the ledger is not available; retry later" — bad input, not an outage."""
    for token in (ADMIN, ACME):
        for path, field in (
            ("/api/v1/runs/acme%00", "run_id"),
            ("/api/v1/tenants/acme%00/invoice", "tenant"),
            ("/api/v1/tenants/acme%00/export.csv", "tenant"),
            (f"/api/v1/runs/{'r' * 201}", "run_id"),
        ):
            params = {"period": "2026-03"} if "runs" not in path else {}
            r = await pg_client.get(path, params=params, headers=auth(token))
            assert r.status_code == 400, (path, r.text)
            assert r.json()["field"] == field and r.json()["message"]
    r = await pg_client.get("/api/v1/runs/acme-run", headers=auth(ACME))
    assert r.status_code == 200 and r.json()["total_cost"] == "0.2"


async def test_an_ingested_event_postgres_cannot_store_is_refused_not_a_poison(
    pg_client: httpx.AsyncClient,
) -> None:
    """A NUL in `operation` or `unpriced_reason` was accepted (200), then stopped the PostgreSQL
    ledger at that event: every report of every tenant answered 503 from then on."""
    bad_operation = cloud(feature="nul")
    bad_operation["data"]["operation"] = "chat\x00"
    bad_reason = cloud(feature="nul", priced=False)
    bad_reason["data"]["unpriced_reason"] = "no price\x00"
    good = cloud(feature="nul")
    r = await pg_client.post("/api/v1/events", json=[bad_operation, bad_reason, good], headers=auth(ACME))
    assert r.status_code == 207, r.text
    assert r.json()["accepted"] == [good["id"]]
    assert [(e["index"], e["field"], e["status"]) for e in r.json()["errors"]] == [
        (0, "operation", 422),
        (1, "unpriced_reason", 422),
    ]
    for token in (ACME, GLOBEX, ADMIN):
        totals = await pg_client.get("/api/v1/usage/totals", params=WINDOW, headers=auth(token))
        assert totals.status_code == 200, totals.text
    totals = await pg_client.get(
        "/api/v1/usage/totals", params={**WINDOW, "feature": "nul"}, headers=auth(ACME)
    )
    assert totals.json()["totals"]["events"] == 1
