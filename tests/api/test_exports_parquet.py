"""The Parquet export: the CSV export's rows and columns, typed, with money exact to the last digit."""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from outlay import Outlay
from outlay.events import new_event_id

from .conftest import ACME, ADMIN, T0, auth, event

URL = "/api/v1/tenants/{}/export.parquet"
MARCH = {"period": "2026-03"}
#: 14 whole digits and 24 decimals: the most decimal128(38, 24) holds, and a catalog price per token
#: (18 decimals per million) times a token count.
WIDEST = Decimal("99999999999999.999999999999999999999999")
PER_TOKEN = Decimal("0.041666666666666664") / 1_000_000 * 7


async def parquet(
    client: httpx.AsyncClient, tenant: str = "acme", token: str = ACME, **params: str
) -> pa.Table:
    r = await client.get(URL.format(tenant), params={**MARCH, **params}, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert r.headers["x-outlay-sha256"] == hashlib.sha256(r.content).hexdigest()
    name = f"{tenant}-{params.get('period', '2026-03')}-{params.get('what', 'invoice')}.parquet"
    assert r.headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    return pq.read_table(pa.BufferReader(r.content))


async def csv_rows(client: httpx.AsyncClient, **params: str) -> list[dict[str, str]]:
    r = await client.get("/api/v1/tenants/acme/export.csv", params={**MARCH, **params}, headers=auth(ACME))
    assert r.status_code == 200
    return list(csv.DictReader(io.StringIO(r.text)))


def same(value: object, text: str) -> bool:
    """Whether a Parquet cell holds what the CSV export wrote (money compared as numbers: the CSV
    keeps an event's own text, "0.10", where Parquet has a fixed scale)."""
    if value is None:
        return text == ""
    if isinstance(value, Decimal):
        return text != "" and Decimal(text) == value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == text
    return str(value) == text


async def test_entries_are_the_ledger_exactly(client: httpx.AsyncClient, outlay: Outlay) -> None:
    outlay.record(event(time=T0, cost=WIDEST))
    outlay.record(event(time=T0, cost=PER_TOKEN, model="gpt-4o-mini"))
    table = await parquet(client, what="entries")
    assert table.schema.field("cost").type == pa.decimal128(38, 24)
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("priced").type == pa.bool_()
    assert table.schema.metadata[b"outlay.tenant"] == b"acme"
    by_id = {row["event_id"]: row for row in table.to_pylist()}
    month = outlay.ledger.entries(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    entries = [e for e in month if e.event.tenant_id == "acme" and e.event.environment == "production"]
    assert len(by_id) == len(entries) == 8  # 5 seeded, a budget decision and the 2 above
    for entry in entries:
        row = by_id[entry.event.event_id]
        assert row["cost"] == entry.cost  # Decimal equality: every digit, no float in between
        assert row["recorded_cost"] == entry.event.cost
        assert (row["time"], row["priced"], row["model"]) == (
            entry.event.time,
            entry.priced,
            entry.event.model,
        )
    assert WIDEST in {r["cost"] for r in by_id.values()} and PER_TOKEN in {r["cost"] for r in by_id.values()}


@pytest.mark.parametrize("what", ["invoice", "entries"])
async def test_same_rows_and_columns_as_the_csv(client: httpx.AsyncClient, what: str) -> None:
    table = await parquet(client, what=what)
    rows = await csv_rows(client, what=what)
    assert table.column_names == list(rows[0])
    assert table.num_rows == len(rows) > 1
    for cells, row in zip(table.to_pylist(), rows, strict=True):
        assert [k for k, v in cells.items() if not same(v, row[k])] == [], (cells, row)


async def test_invoice_lines_match_the_invoice(client: httpx.AsyncClient) -> None:
    table = await parquet(client, what="invoice", environment="staging")
    invoice = await client.get("/api/v1/tenants/acme/invoice", params={**MARCH, "environment": "staging"},
                               headers=auth(ACME))  # fmt: skip
    lines = invoice.json()["lines"]
    assert [(r["model"], r["cost"], r["events"]) for r in table.to_pylist()] == [
        (line["model"], Decimal(line["cost"]), line["events"]) for line in lines
    ]
    assert table.schema.metadata[b"outlay.environment"] == b"staging"


async def test_the_bytes_are_stable(client: httpx.AsyncClient) -> None:
    first = await client.get(URL.format("acme"), params={**MARCH, "what": "entries"}, headers=auth(ACME))
    again = await client.get(URL.format("acme"), params={**MARCH, "what": "entries"}, headers=auth(ACME))
    assert first.content == again.content  # so the X-Outlay-SHA256 of a file can be checked later


async def test_an_empty_month_is_a_valid_file(client: httpx.AsyncClient) -> None:
    table = await parquet(client, what="entries", period="2026-05")
    assert table.num_rows == 0 and "cost" in table.column_names


@pytest.mark.parametrize(
    ("cost", "message"),
    [(Decimal("0.0000000000000000000000001"), "more than 24 decimal places"), (Decimal(10) ** 14, "or more")],
)
async def test_money_that_does_not_fit_is_refused_not_rounded(
    client: httpx.AsyncClient, outlay: Outlay, cost: Decimal, message: str
) -> None:
    event_id = new_event_id()
    outlay.record(event(event_id=event_id, cost=cost))
    r = await client.get(URL.format("acme"), params={**MARCH, "what": "entries"}, headers=auth(ACME))
    assert r.status_code == 422
    body = r.json()
    assert (body["error"], body["field"]) == ("not_representable", "cost")
    assert event_id in body["message"] and message in body["message"] and "CSV" in body["message"]
    lines = await client.get(URL.format("acme"), params=MARCH, headers=auth(ACME))
    assert lines.status_code == 422 and "the line search/chat/gpt-4o" in lines.json()["message"]
    # the CSV keeps every digit
    assert format(cost, "f") in {row["cost"] for row in await csv_rows(client, what="entries")}


async def test_without_pyarrow_the_answer_names_the_extra(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    r = await client.get(URL.format("acme"), params=MARCH, headers=auth(ACME))
    assert r.status_code == 501
    assert r.json()["error"] == "not_implemented" and "outlay[parquet]" in r.json()["message"]
    assert (await client.get("/api/v1/tenants/acme/export.csv", params=MARCH, headers=auth(ACME))).is_success


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({}, 400, "period"),
        ({"period": "2026-13"}, 400, "period"),
        ({"period": "2026-03", "what": "everything"}, 400, "what"),
        ({"period": "2026-03", "environment": "prod"}, 400, "environment"),
        ({"period": "2026-03", "format": "parquet"}, 400, "format"),
    ],
)
async def test_bad_input(client: httpx.AsyncClient, params: dict[str, str], status: int, field: str) -> None:
    r = await client.get(URL.format("acme"), params=params, headers=auth(ACME))
    assert (r.status_code, r.json()["field"]) == (status, field)


async def test_unknown_tenant_is_404_for_an_admin(client: httpx.AsyncClient) -> None:
    r = await client.get(URL.format("nobody"), params=MARCH, headers=auth(ADMIN))
    assert (r.status_code, r.json()["field"]) == (404, "tenant")
