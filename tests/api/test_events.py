"""The event ledger (cursor pagination), ingest, and run trees."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from outlay import Outlay
from outlay.api import create_app

from .conftest import ACME, ADMIN, GLOBEX, T0, TOKENS, WINDOW, auth, cloud, event, seed_decisions, seed_events


async def pages(client: httpx.AsyncClient, token: str = ADMIN, **params: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/events", params=query, headers=auth(token))
        assert r.status_code == 200, r.text
        events.extend(r.json()["events"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return events


async def test_pages_cover_every_event_once_in_time_order(client: httpx.AsyncClient, outlay: Outlay) -> None:
    events = await pages(client, limit="3")
    ids = [e["event_id"] for e in events]
    ledger = outlay.reports().ledger
    expected = {e.event.event_id for e in ledger.entries(T0 - timedelta(days=365), T0 + timedelta(days=365))}
    assert len(expected) == len(seed_events()) + len(seed_decisions())
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)  # many ties at T0, none lost


async def test_cursor_is_stable_while_events_arrive(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/events", params={"limit": "2"}, headers=auth(ADMIN))
    first = r.json()["events"]
    cursor = r.json()["next_cursor"]
    # New events at the very instant of the page's last event and later: not skipped, not repeated.
    late = [cloud(time=T0), cloud(time=T0 + timedelta(days=20))]
    assert (await client.post("/api/v1/events", json=late, headers=auth(ADMIN))).status_code == 200
    rest: list[dict[str, Any]] = []
    while cursor:
        r = await client.get("/api/v1/events", params={"limit": "2", "cursor": cursor}, headers=auth(ADMIN))
        rest.extend(r.json()["events"])
        cursor = r.json()["next_cursor"]
    ids = [e["event_id"] for e in first + rest]
    assert len(ids) == len(set(ids))
    assert {e["id"] for e in late} <= set(ids)


async def test_filters_and_effective_cost(client: httpx.AsyncClient) -> None:
    events = await pages(client, **WINDOW, tenant="acme", model="gpt-4o", environment="production")
    assert {e["tenant_id"] for e in events} == {"acme"} and len(events) == 3
    assert all(e["cost"] == "0.1" and e["priced"] for e in events)


async def test_cursor_of_another_query_or_garbage_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/events", params={"limit": "1"}, headers=auth(ADMIN))
    cursor = r.json()["next_cursor"]
    other = await client.get(
        "/api/v1/events", params={"cursor": cursor, "tenant": "acme"}, headers=auth(ADMIN)
    )
    assert other.status_code == 400 and other.json()["field"] == "cursor"
    for garbage in ("x", "eyJ0IjoxfQ", "%%%", "e30"):
        bad = await client.get("/api/v1/events", params={"cursor": garbage}, headers=auth(ADMIN))
        assert bad.status_code == 400 and bad.json()["field"] == "cursor", garbage


async def test_a_hand_made_cursor_at_any_instant_is_a_400(client: httpx.AsyncClient) -> None:
    """The query's fingerprint in a cursor is no secret: a cursor made by hand with an instant past
    datetime's range was a 500; one outside the window is not a cursor this API returned either."""
    r = await client.get("/api/v1/events", params={**WINDOW, "limit": "1"}, headers=auth(ACME))
    cursor = r.json()["next_cursor"]
    fields = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for us in (10**19, 2**63 - 1, -(10**18), 0, -1):
        forged = base64.urlsafe_b64encode(orjson.dumps({**fields, "t": us})).decode().rstrip("=")
        bad = await client.get("/api/v1/events", params={**WINDOW, "cursor": forged}, headers=auth(ACME))
        assert bad.status_code == 400 and bad.json()["field"] == "cursor", (us, bad.text)
    good = await client.get("/api/v1/events", params={**WINDOW, "cursor": cursor}, headers=auth(ACME))
    assert good.status_code == 200


async def test_ingest_is_validated_idempotent_and_visible(client: httpx.AsyncClient) -> None:
    good = cloud(tenant_id="acme", feature="ingested", time=T0)
    bad_money = cloud(feature="ingested")
    bad_money["data"]["cost"] = 0.25  # a float: exactness already lost, refused
    batch = [good, bad_money, good, {"specversion": "1.0"}, "not an object"]
    r = await client.post("/api/v1/events", json=batch, headers=auth(ADMIN))
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["accepted"] == [good["id"]] and body["duplicates"] == [good["id"]]
    errors = {e["index"]: e for e in body["errors"]}
    assert set(errors) == {1, 3, 4}
    assert errors[1]["field"] == "data.cost" and "decimal string" in errors[1]["message"]
    assert errors[3]["field"] == "type"
    # a replay of the same batch changes no total
    again = await client.post("/api/v1/events", json=[good], headers=auth(ADMIN))
    assert again.status_code == 200
    totals = await client.get("/api/v1/usage/totals", params={**WINDOW, "feature": "ingested"},
                              headers=auth(ADMIN))  # fmt: skip
    assert totals.json()["totals"]["events"] == 1 and totals.json()["totals"]["cost"] == "0.1"


async def test_an_event_id_replayed_in_another_case_counts_once(client: httpx.AsyncClient) -> None:
    """A UUID is case-insensitive: a service (or a retry path) that writes it in upper case sends
    the same event, which must not be counted twice."""
    first = cloud(feature="id-case", time=T0)
    again = {**first, "id": first["id"].upper()}
    for body in ([first], [again], [first, again]):
        r = await client.post("/api/v1/events", json=body, headers=auth(ADMIN))
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == [first["id"]]
    totals = await client.get("/api/v1/usage/totals", params={**WINDOW, "feature": "id-case"},
                              headers=auth(ADMIN))  # fmt: skip
    assert totals.json()["totals"]["events"] == 1 and totals.json()["totals"]["cost"] == "0.1"
    listed = await pages(client, **WINDOW, feature="id-case")
    assert [e["event_id"] for e in listed] == [first["id"]]


async def test_an_event_whose_time_or_ids_no_report_could_hold_is_refused_alone(
    client: httpx.AsyncClient,
) -> None:
    good = cloud(feature="edge")
    late = {**cloud(feature="edge"), "time": "9999-12-31T23:00:00-05:00"}  # past datetime's range in UTC
    early = {**cloud(feature="edge"), "time": "1999-06-30T23:00:00Z"}  # /events could never list it
    newline = cloud(feature="edge")
    newline["data"]["tenant_id"] = newline["subject"] = "new\nline"
    r = await client.post("/api/v1/events", json=[good, late, early, newline], headers=auth(ADMIN))
    assert r.status_code == 207, r.text
    assert r.json()["accepted"] == [good["id"]]
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [
        (1, "time"),
        (2, "time"),
        (3, "tenant_id"),
    ]


async def test_ingest_refuses_whole_bad_bodies(client: httpx.AsyncClient) -> None:
    for body in (b"", b"{", b"[]", b'{"events": 3}', b"[" + b"{}," * 1000 + b"{}]"):
        r = await client.post("/api/v1/events", content=body, headers=auth(ADMIN))
        assert r.status_code == 400 and r.json()["field"] == "body", body[:20]
    huge = b'["' + b"x" * (9 * 1024 * 1024) + b'"]'
    r = await client.post("/api/v1/events", content=huge, headers=auth(ADMIN))
    assert r.status_code == 400 and "bytes" in r.json()["message"]


async def test_ingest_is_durable_before_the_answer(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    first = Outlay(str(home))
    app = create_app(first, tokens=TOKENS)
    sent = [cloud(feature="durable", time=T0 + timedelta(minutes=i)) for i in range(5)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        r = await c.post("/api/v1/events", json=sent, headers=auth(ACME))
        assert r.status_code == 200
    # a new process (a new Outlay on the same files) finds every accepted event: nothing was buffered
    second = Outlay(str(home))
    try:
        totals = second.reports().breakdown("feature", WINDOW["from"], WINDOW["to"])
        assert {row["feature"]: row["events"] for row in totals} == {"durable": 5}
    finally:
        second.close()
        first.close()


async def test_concurrent_ingest_counts_each_event_once(client: httpx.AsyncClient) -> None:
    batch = [cloud(feature="race", time=T0) for _ in range(20)]
    replies = await asyncio.gather(
        *(client.post("/api/v1/events", json=batch, headers=auth(ADMIN)) for _ in range(8))
    )
    assert all(r.status_code == 200 for r in replies)
    totals = await client.get(
        "/api/v1/usage/totals", params={**WINDOW, "feature": "race"}, headers=auth(ADMIN)
    )
    assert totals.json()["totals"]["events"] == 20 and totals.json()["totals"]["cost"] == "2"


async def test_a_run_id_two_tenants_used_shows_neither_the_others_spend(client: httpx.AsyncClient) -> None:
    """Run ids are global: a run id a tenant reuses (or guesses) must not show it another's costs."""
    from decimal import Decimal

    posted = [
        await client.post("/api/v1/events", json=[cloud(tenant_id="globex", run_id="nightly-1",
                                                          cost=Decimal("0.01"))], headers=auth(GLOBEX)),
        await client.post("/api/v1/events", json=[cloud(run_id="nightly-1", cost=Decimal("42")),
                                                  cloud(run_id="nightly-1", cost=Decimal("8")),
                                                  cloud(run_id="acme-step", parent_run_id="nightly-1",
                                                        root_run_id="nightly-1", cost=Decimal("1"))],
                          headers=auth(ACME)),
    ]  # fmt: skip
    assert [r.status_code for r in posted] == [200, 200], [r.text for r in posted]
    globex = await client.get("/api/v1/runs/nightly-1", headers=auth(GLOBEX))
    assert globex.status_code == 404  # nothing of globex's own to show: no mixed totals
    acme = (await client.get("/api/v1/runs/nightly-1", headers=auth(ACME))).json()
    assert (acme["events"], acme["cost"], acme["several_tenants"]) == (0, None, True)
    assert [(c["run_id"], c["cost"]) for c in acme["children"]] == [("acme-step", "1")]
    assert (acme["total_cost"], acme["total_events"]) == ("1", 1)  # its own step, not the mixed run
    admin = (await client.get("/api/v1/runs/nightly-1", headers=auth(ADMIN))).json()
    assert (admin["tenant"], admin["several_tenants"], admin["cost"]) == (None, True, "50.01")


async def test_a_run_id_two_tenants_used_shows_not_the_others_agent(client: httpx.AsyncClient) -> None:
    """Writing to another tenant's run id (one event, a step under it) must not reveal that run's
    agent: the structure node a tenant is shown carries nothing of the other tenant's."""
    posted = [
        await client.post("/api/v1/events", json=[cloud(tenant_id="globex", run_id="job-7",
                                                          agent="globex-nightly-agent")],
                          headers=auth(GLOBEX)),
        await client.post("/api/v1/events", json=[cloud(run_id="job-7"),
                                                  cloud(run_id="acme-step-7", parent_run_id="job-7",
                                                        root_run_id="job-7")], headers=auth(ACME)),
    ]  # fmt: skip
    assert [r.status_code for r in posted] == [200, 200], [r.text for r in posted]
    acme = await client.get("/api/v1/runs/job-7", headers=auth(ACME))
    assert acme.status_code == 200 and "globex" not in acme.text, acme.text
    assert acme.json()["agent"] is None and acme.json()["children"][0]["agent"] == "planner"
    admin = (await client.get("/api/v1/runs/job-7", headers=auth(ADMIN))).json()
    assert admin["agent"] == "globex-nightly-agent"


async def test_a_tenants_runs_under_a_job_or_another_tenants_run_are_reachable_from_it(
    client: httpx.AsyncClient,
) -> None:
    """A platform job (no tenant) that runs a step per tenant: each tenant sees the job as structure
    leading to its own steps, not a 404 claiming nothing was recorded under it. A parent that is
    another tenant's run must look just like one never recorded: 200 or 404 must not tell a tenant
    whether a run id it guessed exists."""
    from decimal import Decimal

    job = [
        cloud(tenant_id=None, run_id="nightly-root", root_run_id="nightly-root", origin="nightly",
              agent="platform-scheduler", cost=Decimal("5")),
        cloud(run_id="nightly-acme", parent_run_id="nightly-root", root_run_id="nightly-root",
              cost=Decimal("0.25")),
        cloud(tenant_id="globex", run_id="nightly-globex", parent_run_id="nightly-root",
              root_run_id="nightly-root", cost=Decimal("7")),
        cloud(tenant_id="globex", run_id="globex-secret-run", root_run_id="globex-secret-run",
              agent="g-agent"),
    ]  # fmt: skip
    assert (await client.post("/api/v1/events", json=job, headers=auth(ADMIN))).status_code == 200
    r = await client.get("/api/v1/runs/nightly-root", headers=auth(ACME))
    assert r.status_code == 200, r.text
    tree = r.json()
    assert (tree["events"], tree["cost"], tree["agent"], tree["tenant"]) == (0, None, None, None)
    assert [(c["run_id"], c["cost"]) for c in tree["children"]] == [("nightly-acme", "0.25")]
    assert (tree["total_cost"], tree["total_events"]) == ("0.25", 1)
    assert "globex" not in r.text and "platform-scheduler" not in r.text
    # Steps under a guessed run id: one that exists (globex's) and one that never did.
    probes = [
        cloud(run_id=f"probe-{guess}", parent_run_id=guess, root_run_id=guess, cost=Decimal("0.01"))
        for guess in ("globex-secret-run", "never-recorded-run")
    ]
    assert (await client.post("/api/v1/events", json=probes, headers=auth(ACME))).status_code == 200
    seen = [await client.get(f"/api/v1/runs/{guess}", headers=auth(ACME))
            for guess in ("globex-secret-run", "never-recorded-run")]  # fmt: skip
    assert [r.status_code for r in seen] == [200, 200]
    existing, absent = (r.json() for r in seen)
    assert existing["children"][0]["run_id"] == "probe-globex-secret-run"
    for name in ("run_id", "children"):
        existing.pop(name), absent.pop(name)
    assert existing == absent  # nothing tells the two apart
    admin = await client.get("/api/v1/runs/globex-secret-run", headers=auth(ADMIN))
    assert admin.json()["tenant"] == "globex"


async def test_run_tree_rolls_up_and_is_pruned_for_a_tenant(client: httpx.AsyncClient) -> None:
    admin = (await client.get("/api/v1/runs/acme-run", headers=auth(ADMIN))).json()
    assert admin["total_cost"] == "1.2"  # acme 0.1 + 0.1, globex's run under it 1.00
    assert {c["run_id"] for c in admin["children"]} == {"acme-run-1", "globex-run-in-acme"}
    acme = await client.get("/api/v1/runs/acme-run", headers=auth(ACME))
    assert acme.status_code == 200
    assert acme.json()["total_cost"] == "0.2"
    assert [c["run_id"] for c in acme.json()["children"]] == ["acme-run-1"]
    assert (await client.get("/api/v1/runs/globex-run", headers=auth(ACME))).status_code == 404
    assert (await client.get("/api/v1/runs/globex-run", headers=auth(GLOBEX))).status_code == 200
    missing = await client.get("/api/v1/runs/no-such-run", headers=auth(ADMIN))
    assert missing.status_code == 404 and missing.json()["field"] == "run_id"


async def test_origin_filter_lists_the_events_usage_adds_up(client: httpx.AsyncClient) -> None:
    # An attributed event that carries an origin: the rollups (and so /usage/*?origin=) count an
    # origin for unattributed spend only; /events?origin= must list the same events.
    tagged = [cloud(time=T0, origin="nightly-job"), cloud(time=T0, tenant_id=None, origin="nightly-job")]
    assert (await client.post("/api/v1/events", json=tagged, headers=auth(ADMIN))).status_code == 200
    listed = await pages(client, **WINDOW, origin="nightly-job")
    query = {**WINDOW, "origin": "nightly-job"}
    r = await client.get("/api/v1/usage/totals", params=query, headers=auth(ADMIN))
    assert len(listed) == r.json()["totals"]["events"] == 2
    assert {e.get("tenant_id") for e in listed} == {None}


async def test_a_run_tree_deeper_than_the_recursion_limit(outlay: Outlay, client: httpx.AsyncClient) -> None:
    """A chain of runs deeper than orjson's 255 levels (128 runs) was a 500, and one deeper than
    Python's recursion limit too for a tenant token (the pruning recursed): now the whole tree."""
    import sys

    depth = sys.getrecursionlimit() + 50
    outlay.record(event(run_id="deep-0", root_run_id="deep-0"))
    for i in range(1, depth):
        outlay.record(event(run_id=f"deep-{i}", parent_run_id=f"deep-{i - 1}", root_run_id="deep-0"))
    outlay.flush()
    for token in (ADMIN, ACME):
        reply = await client.get("/api/v1/runs/deep-0", headers=auth(token))
        assert reply.status_code == 200, reply.text[:300]
        assert reply.text.count('"run_id"') == depth
        assert reply.text.startswith('{"run_id":"deep-0"') and f'"total_events":{depth}' in reply.text
    assert (await client.get("/api/v1/runs/deep-0", headers=auth(GLOBEX))).status_code == 404


async def test_ingested_labels_are_bounded_and_the_rest_of_the_batch_goes_on(
    client: httpx.AsyncClient,
) -> None:
    good = cloud(feature="labelled", time=T0, labels={f"k{i}": "v" * 1024 for i in range(64)})
    too_many = cloud(feature="labelled", time=T0)
    too_many["data"]["labels"] = {f"k{i}": "v" for i in range(65)}
    too_long = cloud(feature="labelled", time=T0)
    too_long["data"]["labels"] = {"note": "x" * 1_000_000}
    bad_key = cloud(feature="labelled", time=T0)
    bad_key["data"]["labels"] = {"has space": "v"}
    r = await client.post("/api/v1/events", json=[good, too_many, too_long, bad_key], headers=auth(ADMIN))
    assert r.status_code == 207, r.text
    assert r.json()["accepted"] == [good["id"]]
    errors = r.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "data.labels"),
        (2, "data.labels"),
        (3, "data.labels"),
    ]
    assert "at most 64 labels" in errors[0]["message"]
    assert "note: values must be at most 1024 characters, got 1000000" in errors[1]["message"]
    assert "keys must be names" in errors[2]["message"]
