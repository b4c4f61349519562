"""The finance, period-close and audit endpoints: exact numbers, the seal through a rerate, bad input."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from outlay import Outlay
from outlay._rating import Rating
from outlay.finance import audit_csv_sha256, period_store_for, verify_period

from ._finance_cases import PLANS, plans_file
from .conftest import ACME, ADMIN, auth, event

MARGINS = "/api/v1/finance/margins"


async def test_margins_are_exact_and_flag_unpriced(client: httpx.AsyncClient) -> None:
    with plans_file():
        r = await client.get(MARGINS, params={"period": "2026-03"}, headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    rows = {row["tenant"]: row for row in r.json()["rows"]}
    # acme production March: 3 x 0.10 + 1e-18 embedding, one unpriced call (staging's 5 left out)
    assert rows["acme"] == {
        "tenant": "acme", "plan": "flat", "revenue": "10", "cost": "0.300000000000000001",
        "margin": "9.699999999999999999", "margin_ratio": "0.970000", "events": 5, "unpriced_events": 1,
        "bound": "at_most",
    }  # fmt: skip
    assert rows["globex"]["revenue"] == "6" and rows["globex"]["margin"] == "4"
    with plans_file():
        low = await client.get(MARGINS, params={"period": "2026-03", "below": "0.9"}, headers=auth(ADMIN))
    # globex's 0.67 is under 0.9; acme's 0.97 is only an upper bound, so it cannot be ruled out
    assert [row["tenant"] for row in low.json()["rows"]] == ["globex", "acme"]


@pytest.mark.parametrize(
    ("params", "plans", "field"),
    [
        ({"period": "2026-3"}, PLANS, "period"),
        ({}, PLANS, "period"),
        ({"period": "2026-03", "below": "lots"}, PLANS, "below"),
        ({"period": "2026-03", "environment": "prod"}, PLANS, "environment"),
        (
            {"period": "2026-03"},
            '[tenants.acme]\nmodel = "flat"\nmonthly_fee = 10.5\n',
            "tenants.acme.monthly_fee",
        ),
        ({"period": "2026-03"}, "[tenants.acme\n", "plans"),
    ],
)
async def test_bad_margin_requests_are_400_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], plans: str, field: str
) -> None:
    with plans_file(plans):
        r = await client.get(MARGINS, params=params, headers=auth(ADMIN))
    assert r.status_code == 400 and r.json()["field"] == field, r.text


async def test_margins_without_a_plans_file_say_how_to_configure_one(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAY_PLANS", raising=False)
    r = await client.get(MARGINS, params={"period": "2026-03"}, headers=auth(ADMIN))
    assert r.status_code == 400 and "OUTLAY_PLANS" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"period": "2026-03"}', "proposal"),
        (b'{"period": "2026-03", "markup": 1.3}', "markup"),
        (b'{"period": "2026-03", "markup": "-1"}', "markup"),
        (b'{"period": "2026-03", "markup": "x"}', "markup"),
        (b'{"period": "2026-03", "markup": "1e999999"}', "markup"),
        (b'{"period": "2026-03", "per_1m_tokens": "0.1234567890123456789"}', "per_1m_tokens"),
        (b'{"period": "March", "markup": "1.3"}', "period"),
        (b'{"period": "2026-03", "markup": "1.3", "tenant": "acme"}', "tenant"),
        (b'{"period": "2026-03", "markup": "1.3", "tenants": "acme"}', "tenants"),
        (b'{"period": "2026-03", "markup": "1.3", "environment": ["production"]}', "environment"),
        (b'{"period": "2026-03", "markup": "1.3", "environment": {}}', "environment"),
    ],
)
async def test_bad_simulations_are_400(client: httpx.AsyncClient, body: bytes, field: str) -> None:
    r = await client.post("/api/v1/finance/simulate", content=body, headers=auth(ADMIN))
    assert r.status_code == 400 and r.json()["field"] == field, r.text


async def test_simulation_against_current_plans(client: httpx.AsyncClient) -> None:
    body = {"period": "2026-03", "per_1m_tokens": "1000", "tenants": ["acme"]}
    with plans_file():
        r = await client.post("/api/v1/finance/simulate", json=body, headers=auth(ADMIN))
    # acme production March: 5 events x 110 tokens = 550 tokens -> 0.55 at 1000 per million
    assert r.json()["rows"] == [{"tenant": "acme", "cost": "0.300000000000000001", "current": "10",
                                 "proposed": "0.55", "change": "-9.45", "unpriced_events": 1,
                                 "complete": False}]  # fmt: skip


@pytest.mark.parametrize("period", ["2026-3", "2026-00", "x' OR 1=1 --", "2199-13"])
async def test_bad_period_in_the_path(client: httpx.AsyncClient, period: str) -> None:
    for method, path in (("POST", f"/api/v1/periods/{period}/close"), ("GET", f"/api/v1/periods/{period}")):
        r = await client.request(method, path, headers=auth(ADMIN))
        assert r.status_code == 400 and r.json()["field"] == "period"


async def test_an_open_month_cannot_be_closed(client: httpx.AsyncClient) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    r = await client.post(f"/api/v1/periods/{month}/close", headers=auth(ADMIN))
    assert r.status_code == 400 and "has not ended" in r.json()["message"]


async def test_a_month_is_not_sealed_while_the_ledger_is_behind_its_event_log(
    client: httpx.AsyncClient, outlay: Outlay
) -> None:
    # As with NATS: a separate worker writes the ledger, the API cannot catch it up itself.
    outlay.reports()  # the seeded events are in
    outlay.embedded = False
    outlay.record(event(time=datetime(2026, 3, 20, tzinfo=UTC), cost=Decimal("3")))  # still in the log
    refused = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert refused.status_code == 409 and refused.json()["error"] == "conflict"
    assert "1 event(s) behind the event log" in refused.json()["message"]
    assert (
        await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))
    ).status_code == 404  # nothing sealed
    outlay.catch_up()  # the worker catches up
    closed = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert closed.status_code == 201
    assert (await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))).json()["verified"]


async def test_rerate_after_close_keeps_the_seal_and_goes_to_the_next_month(
    client: httpx.AsyncClient, outlay: Outlay
) -> None:
    closed = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert closed.status_code == 201
    again = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert again.status_code == 200 and again.json()["sha256"] == closed.json()["sha256"]
    before = await client.get(
        "/api/v1/tenants/acme/audit.csv", params={"period": "2026-03"}, headers=auth(ACME)
    )
    ledger = outlay.reports().ledger
    march = ledger.entries(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    unpriced = next(e for e in march if e.event.model == "mystery-model")
    now = datetime.now(UTC)
    ledger.append_adjustments([(unpriced.event.event_id, Rating(Decimal("0.07"), True, "v9"))], at=now)
    seal = await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))
    assert seal.json()["verified"] and seal.json()["sha256"] == closed.json()["sha256"]
    assert verify_period(ledger, "2026-03", period_store_for(ledger)).ok
    after = await client.get(
        "/api/v1/tenants/acme/audit.csv", params={"period": "2026-03"}, headers=auth(ACME)
    )
    assert after.content == before.content  # the sealed month reads exactly as it was sealed
    # the tenant checks the export against the published seal with nothing but the file
    published = dict(part.split("=", 1) for part in after.headers["x-outlay-seal"].split("; "))
    assert published["sha256"] == audit_csv_sha256(after.content)
    assert published["sha256"] == closed.json()["tenants"]["acme"]["sha256"]
    carried = await client.get(
        "/api/v1/tenants/acme/audit.csv", params={"period": now.strftime("%Y-%m")}, headers=auth(ACME)
    )
    rows = [r for r in csv.DictReader(io.StringIO(carried.text)) if r["kind"] == "correction"]
    assert [(r["event_id"], r["cost"], r["price_version"]) for r in rows] == [
        (unpriced.event.event_id, "0.07", "v9")
    ]


async def test_audit_export_has_cost_price_version_and_data_handling(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/tenants/acme/audit.csv", params={"period": "2026-03"}, headers=auth(ACME))
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["tenant"] for row in rows} == {"acme"}
    assert {row["environment"] for row in rows} == {"production", "staging"}  # audit covers every environment
    priced = [row for row in rows if row["operation"] == "chat" and row["priced"] == "true"]
    assert priced and all(row["price_version"] == "v1" for row in priced)
    assert {row["run_id"] for row in rows} >= {"acme-run", "acme-run-1"}
    assert any(row["priced"] == "false" and row["unpriced_reason"] for row in rows)
    assert {"region", "retention"} <= set(rows[0])
    missing = await client.get(
        "/api/v1/tenants/nobody/audit.csv", params={"period": "2026-03"}, headers=auth(ADMIN)
    )
    assert missing.status_code == 404
    bad = await client.get("/api/v1/tenants/acme/audit.csv", params={"period": "03/2026"}, headers=auth(ACME))
    assert bad.status_code == 400 and bad.json()["field"] == "period"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/finance/spikes", {"factor": "abc"}, "factor"),
        ("/api/v1/finance/spikes", {"factor": "0.5"}, "factor"),
        ("/api/v1/finance/spikes", {"min": "NaN"}, "min"),
        ("/api/v1/finance/spikes", {"min": "-1"}, "min"),
        ("/api/v1/finance/spikes", {"from": "2000-01-01", "to": "2199-12-31"}, "from"),  # 200 years of days
        ("/api/v1/finance/spikes", {"by": "model"}, "by"),
        ("/api/v1/finance/spikes", {"days": "0"}, "days"),
        ("/api/v1/finance/spikes", {"days": "-3"}, "days"),
        ("/api/v1/finance/spikes", {"from": "2026-04-01", "to": "2026-03-01"}, "to"),
        ("/api/v1/finance/spikes", {"tenant": "nobody"}, "tenant"),
        ("/api/v1/finance/runaway-runs", {"min_runs": "1"}, "min_runs"),
        ("/api/v1/finance/runaway-runs", {"factor": "1e999999"}, "factor"),
        ("/api/v1/finance/runaway-runs", {"environment": "live"}, "environment"),
        ("/api/v1/finance/runaway-runs", {"period": "2026-03"}, "period"),
    ],
)
async def test_bad_analytics_parameters_are_4xx_naming_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    r = await client.get(path, params=params, headers=auth(ADMIN))
    assert 400 <= r.status_code < 500 and r.json()["field"] == field, r.text


async def test_spikes_and_runaway_runs_over_the_api(client: httpx.AsyncClient) -> None:
    # seed: acme spends 0.10 on 2 Mar, then its 0.10 calls go on; globex's run tree reaches into acme's
    r = await client.get(
        "/api/v1/finance/spikes",
        params={"from": "2026-03-01", "to": "2026-03-06", "min": "0.5", "factor": "1"},
        headers=auth(ADMIN),
    )
    # globex: 1.00 on 2 and 3 Mar against a median of 0 (one day of history is not a baseline)
    assert r.json()["spikes"] == [
        {"day": "2026-03-02", "tenant": "globex", "cost": "1", "baseline": "0", "unpriced_events": 1},
        {"day": "2026-03-03", "tenant": "globex", "cost": "1", "baseline": "0", "unpriced_events": 0},
    ]
    runs = await client.get(
        "/api/v1/finance/runaway-runs",
        params={"from": "2026-03-01", "to": "2026-04-01", "min_runs": "2", "factor": "1"},
        headers=auth(ADMIN),
    )
    # planner's two root runs: acme-run (rolled up with globex's child: 0.1 + 0.1 + 1.00) and globex-run
    assert [(x["run_id"], x["cost"]) for x in runs.json()["runs"]] == [("acme-run", "1.2")]


async def test_downloads_for_any_tenant_name_have_valid_headers(
    client: httpx.AsyncClient, outlay: Outlay
) -> None:
    from urllib.parse import quote, unquote

    from .conftest import T0, event

    name = '租户 "q"'  # not Latin-1, with quotes: both broke the headers (500 / a bad filename)
    outlay.record(event(tenant_id=name, time=T0, cost=Decimal("0.5")))
    closed = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert closed.status_code in (200, 201), closed.text
    base = f"/api/v1/tenants/{quote(name, safe='')}"
    for path in ("export.csv", "audit.csv"):
        r = await client.get(f"{base}/{path}", params={"period": "2026-03"}, headers=auth(ADMIN))
        assert r.status_code == 200, r.text
        disposition = r.headers["content-disposition"]
        plain, exact = disposition.split("; filename=")[1].split("; filename*=UTF-8''")
        assert plain.startswith('"') and plain.endswith('"') and '"' not in plain[1:-1]
        assert unquote(exact).startswith(name + "-2026-03")
    seal = dict(part.split("=", 1) for part in r.headers["x-outlay-seal"].split("; "))
    assert unquote(seal["tenant"]) == name and seal["total"] == "0.5"


async def test_exports_keep_a_formula_looking_name_as_text_and_the_seal_still_verifies(
    client: httpx.AsyncClient, outlay: Outlay
) -> None:
    from outlay.finance import audit_csv_sha256

    from .conftest import T0, event

    outlay.record(event(tenant_id="acme", feature='=HYPERLINK("http://x")', time=T0, cost=Decimal("0.5")))
    await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    entries = await client.get(
        "/api/v1/tenants/acme/export.csv", params={"period": "2026-03", "what": "entries"}, headers=auth(ACME)
    )
    features = {row["feature"] for row in csv.DictReader(io.StringIO(entries.text))}
    assert '\'=HYPERLINK("http://x")' in features and not any(f.startswith("=") for f in features)
    audit = await client.get(
        "/api/v1/tenants/acme/audit.csv", params={"period": "2026-03"}, headers=auth(ACME)
    )
    assert "'=HYPERLINK" in audit.text
    seal = dict(part.split("=", 1) for part in audit.headers["x-outlay-seal"].split("; "))
    assert audit_csv_sha256(audit.content) == seal["sha256"]  # the file alone still proves the seal


async def test_a_seal_records_which_token_closed_the_month(client: httpx.AsyncClient) -> None:
    # Closing a month is final: the audit trail must say who did it, not only when. The finance
    # team sees the token's name; a tenant's part of the seal names no one of the operator's.
    closed = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert closed.status_code == 201 and closed.json()["closed_by"] == "finance"
    again = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert again.json()["closed_by"] == "finance"
    seal = await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))
    assert seal.json()["closed_by"] == "finance" and seal.json()["verified"]
    part = await client.get("/api/v1/periods/2026-03", headers=auth(ACME))
    assert "closed_by" not in part.json() and part.json()["verified"]


async def test_ingest_refuses_a_new_event_dated_in_a_closed_month(client: httpx.AsyncClient) -> None:
    # A seal is final. Any tenant token could otherwise add an event to a closed month and so
    # make the month's seal fail to verify for the finance team (and change its own invoice of a
    # month already billed), with nothing but a 200 to show for it.
    from .conftest import cloud

    sent = cloud(time=datetime(2026, 3, 20, tzinfo=UTC), cost=Decimal("0.02"))
    assert (await client.post("/api/v1/events", json=[sent], headers=auth(ACME))).status_code == 200
    closed = await client.post("/api/v1/periods/2026-03/close", headers=auth(ADMIN))
    assert closed.status_code == 201
    invoice = {"period": "2026-03"}
    before = await client.get("/api/v1/tenants/acme/invoice", params=invoice, headers=auth(ACME))
    late = cloud(time=datetime(2026, 3, 20, tzinfo=UTC), cost=Decimal("0.01"))
    fresh = cloud(time=datetime(2026, 4, 3, tzinfo=UTC), cost=Decimal("0.01"))
    r = await client.post("/api/v1/events", json=[late, fresh], headers=auth(ACME))
    assert r.status_code == 207, r.text
    assert r.json()["accepted"] == [fresh["id"]]
    [error] = r.json()["errors"]
    assert (error["index"], error["id"], error["field"], error["status"]) == (0, late["id"], "time", 422)
    assert "2026-03 is closed" in error["message"]
    assert (await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))).json()["verified"] is True
    after = await client.get("/api/v1/tenants/acme/invoice", params=invoice, headers=auth(ACME))
    assert after.json()["total_cost"] == before.json()["total_cost"]
    # A retry of an event the ledger already holds stays what it always was: accepted, counted once.
    r = await client.post("/api/v1/events", json=[sent], headers=auth(ACME))
    assert r.status_code == 200 and r.json()["accepted"] == [sent["id"]], r.text
    assert (await client.get("/api/v1/periods/2026-03", headers=auth(ADMIN))).json()["verified"] is True
    again = await client.get("/api/v1/tenants/acme/invoice", params=invoice, headers=auth(ACME))
    assert again.json()["total_cost"] == before.json()["total_cost"]
