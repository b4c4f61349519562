"""Usage, tenants, concentration, unattributed, unpriced, invoices and decisions over HTTP."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from outlay import Outlay
from outlay._runtime import decision_event
from outlay.api import create_app
from outlay.budgets import Decision

from .conftest import ACME, ADMIN, GLOBEX, T0, TOKENS, WINDOW, auth, cloud, event

D = Decimal
PROD = {**WINDOW, "environment": "production"}


async def get(client: httpx.AsyncClient, path: str, token: str = ADMIN, **params: str) -> httpx.Response:
    return await client.get(path, params=params, headers=auth(token))


async def test_totals_are_exact_and_filtered(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/usage/totals", **PROD, tenant="acme")
    assert r.status_code == 200, r.text
    totals = r.json()["totals"]
    # 3 x 0.10 + 1e-18: summed exactly, never through a float
    assert totals["cost"] == "0.300000000000000001"
    assert totals["unpriced_events"] == 1
    r = await get(client, "/api/v1/usage/totals", **PROD, tenant="acme", feature="index")
    assert r.json()["totals"]["cost"] == "0.000000000000000001"
    assert r.json()["totals"]["events"] == 1


async def test_totals_of_nothing_are_zero_and_all_unpriced_is_null(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/usage/totals", **PROD, tenant="acme", feature="no-such-feature")
    assert r.json()["totals"]["events"] == 0 and r.json()["totals"]["cost"] == "0"
    r = await get(client, "/api/v1/usage/totals", **PROD, model="mystery-model")
    assert r.json()["totals"] == {**r.json()["totals"], "events": 1, "cost": None, "unpriced_events": 1}


async def test_a_window_given_only_its_end_near_the_earliest_day_starts_there(
    client: httpx.AsyncClient,
) -> None:
    """``to=2000-01-05`` alone: the default 30 days before it start before 2000, which no window can;
    the window starts at 2000-01-01 instead of a 400 about a ``from`` the caller never sent."""
    r = await get(client, "/api/v1/usage/totals", to="2000-01-05")
    assert r.status_code == 200, r.text
    assert r.json()["window"]["from"].startswith("2000-01-01") and r.json()["totals"]["events"] == 0


async def test_breakdown_by_several_keys_with_filters(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/usage/breakdown", **PROD, by="tenant,model", provider="openai")
    assert r.status_code == 200, r.text
    rows = {(row["tenant"], row["model"]): row for row in r.json()["rows"]}
    assert rows[("acme", "gpt-4o")]["cost"] == "0.3"
    assert rows[("acme", "gpt-4o")]["events"] == 3
    assert rows[(None, "gpt-4o")]["cost"] == "0.5"  # unattributed spend shows as tenant null
    assert all(model != "claude-secret" for _, model in rows)  # provider filter applied
    # most expensive first, unknown cost last
    costs = [row["cost"] for row in r.json()["rows"]]
    known = [Decimal(c) for c in costs if c is not None]
    assert known == sorted(known, reverse=True)
    assert costs[len(known) :] == [None] * (len(costs) - len(known))


async def test_timeseries_fills_every_day(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/usage/timeseries", **{"from": "2026-03-01", "to": "2026-03-06"},
                  tenant="acme", feature="search", environment="production")  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["days"] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    (series,) = body["series"]
    assert [p["cost"] for p in series["points"]] == ["0", "0.1", "0.1", "0.1", "0"]
    # a day with no event has every field of a point, not only some (tokens read as 0, not missing)
    assert len({tuple(p) for p in series["points"]}) == 1
    assert [p["input_tokens"] for p in series["points"]] == [0, 200, 100, 100, 0]
    r = await get(client, "/api/v1/usage/timeseries", **PROD, by="tenant")
    assert {s["tenant"] for s in r.json()["series"]} == {"acme", "globex", None}


async def test_tenants_concentration_unattributed_unpriced(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/tenants", **PROD)
    assert {row["tenant"] for row in r.json()["rows"]} == {"acme", "globex", None}
    r = await get(client, "/api/v1/concentration", **PROD)
    assert r.json()["top_1_share"] is not None and r.json()["tenants"] == 2
    r = await get(client, "/api/v1/unattributed", **PROD)
    assert r.json()["rows"][0]["origin"] == "nightly-job" and r.json()["rows"][0]["cost"] == "0.5"
    r = await get(client, "/api/v1/unpriced", **PROD)
    assert {row["model"] for row in r.json()["rows"]} == {"mystery-model", "claude-secret-unpriced"}


async def test_invoice_is_production_only_by_default(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/tenants/acme/invoice", ACME, period="2026-03")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["environment"] == "production" and body["period"] == "2026-03"
    assert body["total_cost"] == "0.300000000000000001"  # the 5.00 staging call is not billed
    assert body["unpriced_events"] == 1 and body["complete"] is False
    assert all(not (line["operation"] or "").startswith("decision:") for line in body["lines"])
    staging = await get(client, "/api/v1/tenants/acme/invoice", ACME, period="2026-03", environment="staging")
    assert staging.json()["total_cost"] == "5"
    empty = await get(client, "/api/v1/tenants/acme/invoice", ACME, period="2026-02")
    assert empty.json()["lines"] == [] and empty.json()["total_cost"] == "0"


async def test_a_tenant_or_run_id_holding_a_slash_is_reachable_by_path() -> None:
    with Outlay("memory://") as outlay:
        outlay.record(event(tenant_id="org/acme", run_id="jobs/nightly", root_run_id="jobs/nightly"))
        outlay.record(event(tenant_id="org", cost=Decimal("7")))  # a prefix of it: never mixed in
        tokens = [*TOKENS, {"name": "org-acme", "token": "org-acme-token-0123456789", "tenant": "org/acme"}]
        app = create_app(outlay, tokens=tokens)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            for token in (ADMIN, "org-acme-token-0123456789"):
                r = await get(c, "/api/v1/tenants/org%2Facme/invoice", token, period="2026-03")
                assert r.status_code == 200, r.text
                assert r.json()["tenant"] == "org/acme" and r.json()["total_cost"] == "0.1"
            r = await get(c, "/api/v1/tenants/org%2Facme/export.csv", period="2026-03")
            assert r.status_code == 200 and r.text.splitlines()[1:] == [
                "search,chat,gpt-4o,1,0,0.1,100,0,0,10,0"
            ]
            r = await get(c, "/api/v1/runs/jobs%2Fnightly")
            assert r.status_code == 200 and r.json()["run_id"] == "jobs/nightly"
            # the tenant's token still reaches no other tenant, whatever the path holds
            r = await get(c, "/api/v1/tenants/org/invoice", "org-acme-token-0123456789", period="2026-03")
            assert r.status_code == 403


async def test_budget_decisions(client: httpx.AsyncClient) -> None:
    r = await get(client, "/api/v1/budgets/decisions", **WINDOW)
    assert r.status_code == 200, r.text
    kinds = {(d["kind"], d["tenant"]) for d in r.json()["decisions"]}
    assert kinds == {("denied", "acme"), ("throttled", "globex")}
    denied = next(d for d in r.json()["decisions"] if d["kind"] == "denied")
    assert denied["limit"] == "10" and denied["spent"] == "10.5"
    r = await get(client, "/api/v1/budgets/decisions", **WINDOW, kind="throttled")
    assert [d["tenant"] for d in r.json()["decisions"]] == ["globex"]
    r = await get(client, "/api/v1/budgets/decisions", **WINDOW, limit="1")
    assert len(r.json()["decisions"]) == 1 and r.json()["truncated"] is True


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_decisions_are_only_the_asked_tenants_decisions_of_the_day(
    backend: str, tmp_path: Path
) -> None:
    # One day holding both tenants' decisions among many ordinary events (more than a ledger page)
    # and operations that only look like decisions: a listing shows exactly the decisions asked for.
    def decision(kind: str, tenant: str, minutes: int) -> Decision:
        return Decision(
            kind=kind, message=f"{tenant} {kind}", tenant=tenant, time=T0 + timedelta(minutes=minutes)
        )

    acme = [
        decision("denied", "acme", 1),
        decision("soft_exceeded", "acme", 30),
        decision("denied", "acme", 90),
    ]
    globex = [decision("denied", "globex", 2), decision("throttled", "globex", 60)]
    noise = [
        event(time=T0 + timedelta(seconds=i), tenant_id=("acme", "globex")[i % 2], cost=Decimal("0.01"))
        for i in range(2500)
    ]
    noise += [event(time=T0 + timedelta(minutes=5), operation=op) for op in ("decision", "decisions:denied")]
    # Listed as a decision (its operation starts with "decision:") but never as a "denied" one.
    lookalike = event(time=T0 + timedelta(minutes=6), operation="decision:deniedly", cost=Decimal("0"))
    noise.append(lookalike)
    instance = Outlay("memory://" if backend == "memory" else str(tmp_path / "outlay.db"))
    instance.ledger.write([*noise, *(decision_event(d) for d in acme + globex)])
    app = create_app(instance, tokens=TOKENS)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:

            async def ids(token: str, **params: str) -> list[str]:
                r = await get(c, "/api/v1/budgets/decisions", token, **WINDOW, **params)
                assert r.status_code == 200, r.text
                return [d["id"] for d in r.json()["decisions"]]

            acme_ids = [d.id for d in acme]
            assert await ids(ACME) == [acme_ids[0], lookalike.event_id, *acme_ids[1:]]
            assert await ids(ADMIN, tenant="acme", kind="denied") == [acme_ids[0], acme_ids[2]]
            assert await ids(GLOBEX, kind="denied") == [globex[0].id]
            assert await ids(GLOBEX) == [d.id for d in globex]
            assert await ids(ADMIN, kind="soft_exceeded") == [acme_ids[1]]
    finally:
        instance.close()


async def test_a_decisions_labels_cannot_pass_it_off_as_another_tenants(client: httpx.AsyncClient) -> None:
    # A tenant token may ingest its own "decision:" events with any labels. Labels holding the names
    # of the listing's own fields (tenant, id, time, kind, ...) must not overwrite them: finance would
    # otherwise read acme's event as a decision about globex, under an id that is not the event's.
    spoof = cloud(
        time=T0 + timedelta(hours=3),
        operation="decision:denied",
        cost=D("0"),
        labels={"tenant": "globex", "id": "not-the-id", "kind": "throttled", "time": "2000-01-01",
                "run_id": "globex-run", "model": "claude-secret", "message": "acme label", "scope": "x"},
    )  # fmt: skip
    r = await client.post("/api/v1/events", json=[spoof], headers=auth(ACME))
    assert r.status_code == 200, r.text
    r = await get(client, "/api/v1/budgets/decisions", **WINDOW)
    listed = [d for d in r.json()["decisions"] if d["message"] == "acme label"]
    assert len(listed) == 1
    row = listed[0]
    assert row["id"] == spoof["id"] and row["tenant"] == "acme" and row["kind"] == "denied"
    assert row["time"] == (T0 + timedelta(hours=3)).isoformat()
    assert row["run_id"] is None and row["model"] == "gpt-4o"
    assert row["scope"] == "x"  # other labels are still listed
    r = await get(client, "/api/v1/budgets/decisions", **WINDOW, tenant="globex")
    assert "acme label" not in r.text


async def test_a_decision_event_that_costs_something_is_refused(client: httpx.AsyncClient) -> None:
    # Invoices (and margins, and reconciliation) leave "decision:" lines out, as budget decisions
    # cost nothing. An ingested event named so with a cost would be left out of the invoice while
    # the usage totals and the ledger-entries export count it: refused instead, naming the field.
    priced = cloud(time=T0, operation="decision:chat", cost=D("100"))
    unpriced = cloud(time=T0, operation="decision:denied", priced=False)
    real = cloud(time=T0, operation="decision:denied", cost=D("0"))
    before = await get(client, "/api/v1/tenants/acme/invoice", ACME, period="2026-03")
    r = await client.post("/api/v1/events", json=[priced, unpriced, real], headers=auth(ACME))
    assert r.status_code == 207, r.text
    assert r.json()["accepted"] == [real["id"]]
    assert [(e["index"], e["field"], e["status"]) for e in r.json()["errors"]] == [
        (0, "data.cost", 422),
        (1, "data.cost", 422),
    ]
    after = await get(client, "/api/v1/tenants/acme/invoice", ACME, period="2026-03")
    totals = await get(client, "/api/v1/usage/totals", ACME, **PROD)
    assert after.json()["total_cost"] == before.json()["total_cost"]
    assert totals.json()["totals"]["cost"] == after.json()["total_cost"]


async def test_csv_exports_carry_their_hash(client: httpx.AsyncClient) -> None:
    import csv
    import hashlib
    import io

    r = await get(client, "/api/v1/tenants/acme/export.csv", ACME, period="2026-03")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-outlay-sha256"] == hashlib.sha256(r.content).hexdigest()
    lines = list(csv.DictReader(io.StringIO(r.text)))
    assert sum(Decimal(row["cost"]) for row in lines if row["cost"]) == Decimal("0.300000000000000001")
    entries = await get(client, "/api/v1/tenants/acme/export.csv", ACME, period="2026-03", what="entries")
    rows = list(csv.DictReader(io.StringIO(entries.text)))
    assert {row["tenant_id"] for row in rows} == {"acme"}
    assert {row["environment"] for row in rows} == {"production"}
    assert len(rows) == 6  # 3 chats, an embedding, an unpriced call, a budget decision
    unpriced = [row for row in rows if row["priced"] == "False"]
    assert [row["cost"] for row in unpriced] == [""]  # unknown stays empty, not 0
    again = await get(client, "/api/v1/tenants/acme/export.csv", ACME, period="2026-03", what="entries")
    assert again.headers["x-outlay-sha256"] == entries.headers["x-outlay-sha256"]  # reproducible
