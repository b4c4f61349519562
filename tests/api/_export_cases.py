"""Isolation cases of the Parquet export and provider reconciliation (merged into test_isolation.CASES)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from .conftest import ACME, ADMIN, GLOBEX_MARKERS, auth

Check = Callable[[httpx.AsyncClient], Awaitable[None]]

#: An OpenAI cost export for the seeded day: acme's and the unattributed job's gpt-4o calls.
OPENAI_COSTS = (
    "start_time,end_time,amount_value,amount_currency,line_item,project_id\n"
    '1772409600,1772496000,0.6,usd,"gpt-4o-2024-08-06, input",proj_1\n'
)


def table(r: httpx.Response) -> pa.Table:
    assert r.status_code == 200, r.text
    return pq.read_table(pa.BufferReader(r.content))


def strings_of(t: pa.Table) -> str:
    """Every string cell of a Parquet table, for the marker check (the bytes are compressed)."""
    return " ".join(str(v) for column in t.columns for v in column.to_pylist()).lower()


async def check_export_parquet(client: httpx.AsyncClient) -> None:
    path = "/api/v1/tenants/{}/export.parquet"
    for what in ("invoice", "entries"):
        own = await client.get(path.format("acme"), params={"period": "2026-03", "what": what},
                               headers=auth(ACME))  # fmt: skip
        text = strings_of(table(own))
        assert not [m for m in GLOBEX_MARKERS if m in text], text
        if what == "entries":
            assert set(table(own).column("tenant_id").to_pylist()) == {"acme"}
        theirs = await client.get(path.format("globex"), params={"period": "2026-03", "what": what},
                                  headers=auth(ACME))  # fmt: skip
        assert theirs.status_code == 403 and theirs.json()["error"] == "forbidden"
    admin = await client.get(path.format("globex"), params={"period": "2026-03", "what": "entries"},
                             headers=auth(ADMIN))  # fmt: skip
    assert set(table(admin).column("tenant_id").to_pylist()) == {"globex"}


async def check_reconcile(client: httpx.AsyncClient) -> None:
    url = "/api/v1/finance/reconcile"
    r = await client.post(url, params={"provider": "openai"}, content=OPENAI_COSTS, headers=auth(ACME))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert not [m for m in GLOBEX_MARKERS if m in r.text.lower()]
    admin = await client.post(url, params={"provider": "anthropic", "from": "2026-03-01", "to": "2026-04-01"},
                              content="date,model,cost\n", headers=auth(ADMIN))  # fmt: skip
    assert admin.status_code == 200
    assert {row["model"] for row in admin.json()["rows"]} >= {"claude-secret"}  # every tenant's spend


EXPORT_CASES: dict[tuple[str, str], Check] = {
    ("GET", "/api/v1/tenants/{tenant}/export.parquet"): check_export_parquet,
    ("POST", "/api/v1/finance/reconcile"): check_reconcile,
}
