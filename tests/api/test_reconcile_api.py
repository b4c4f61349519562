"""POST /api/v1/finance/reconcile: a provider's export in, outlay's totals beside it out."""

from __future__ import annotations

import httpx
import pytest

from ._export_cases import OPENAI_COSTS
from .conftest import ADMIN, auth

URL = "/api/v1/finance/reconcile"


async def post(client: httpx.AsyncClient, body: str | bytes, **params: str) -> httpx.Response:
    return await client.post(URL, params={"provider": "openai", **params}, content=body, headers=auth(ADMIN))


async def test_openai_cost_export(client: httpx.AsyncClient) -> None:
    r = await post(client, OPENAI_COSTS)
    assert r.status_code == 200
    body = r.json()
    assert (body["shape"], body["from"], body["to"]) == ("openai-costs", "2026-03-02", "2026-03-03")
    rows = {row["model"]: row for row in body["rows"]}
    # acme's 0.10 chat + 5 on staging + the nightly job's 0.50, all gpt-4o, against 0.6 billed
    assert (rows["gpt-4o"]["ours_cost"], rows["gpt-4o"]["theirs_cost"], rows["gpt-4o"]["drift"]) == (
        "5.6", "0.6", "5")  # fmt: skip
    assert rows["gpt-4o"]["drift_pct"] == "833.33" and rows["gpt-4o"]["status"] == "drift"
    assert rows["mystery-model"]["status"] == "ours_only"
    assert "claude-secret" not in rows  # another provider's spend is not openai's
    production = await post(client, OPENAI_COSTS, environment="production", tolerance="0.05")
    row = next(r for r in production.json()["rows"] if r["model"] == "gpt-4o")
    assert (row["ours_cost"], row["status"], production.json()["tolerance"]) == ("0.6", "match", "0.05")


@pytest.mark.parametrize(
    ("body", "params", "field", "message"),
    [
        (OPENAI_COSTS.replace("0.6,", "0,6,"), {}, "csv", "line 2: 7 cells, but the header has 6"),
        (OPENAI_COSTS.replace("0.6,", "six,"), {}, "csv", "line 2, column 'amount_value'"),
        ("", {}, "body", "CSV export"),
        (OPENAI_COSTS, {"provider": ""}, "provider", "non-empty"),
        (OPENAI_COSTS, {"from": "March"}, "from", "a date like"),
        (OPENAI_COSTS, {"tolerance": "0.01.2"}, "tolerance", "not a decimal"),
        (OPENAI_COSTS, {"environment": "prod"}, "environment", "must be one of"),
        (OPENAI_COSTS, {"columns": "date"}, "columns", "name=Header"),
        (OPENAI_COSTS, {"period": "2026-03"}, "period", "unknown parameter"),
    ],
)
async def test_bad_input_is_a_400_naming_the_place(
    client: httpx.AsyncClient, body: str, params: dict[str, str], field: str, message: str
) -> None:
    r = await post(client, body, **params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and message in r.json()["message"]


async def test_provider_is_required(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=OPENAI_COSTS, headers=auth(ADMIN))
    assert (r.status_code, r.json()["field"]) == (400, "provider")


async def test_too_big_a_body_is_refused(client: httpx.AsyncClient) -> None:
    r = await post(client, b"date,model,cost\n" + b"2026-03-02,gpt-4o,1\n" * 500_000)
    assert (r.status_code, r.json()["field"]) == (400, "body")
