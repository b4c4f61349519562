"""The OpenAPI document describes every endpoint; /docs is self-contained; `outlay api` options."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from outlay.api import ENDPOINTS, hash_token
from outlay.cli._api import api


async def test_openapi_describes_every_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(e.method, e.path) for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        op = doc["paths"][endpoint.path][endpoint.method.lower()]
        assert {p["name"] for p in op["parameters"] if p["in"] == "query"} == set(endpoint.params)
        assert {"401", "403", "400"} <= set(op["responses"])
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    # Request bodies say what they are: CloudEvents JSON for ingest, the provider's CSV to reconcile.
    ingest = doc["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]
    reconcile = doc["paths"]["/api/v1/finance/reconcile"]["post"]["requestBody"]["content"]
    assert [shape["type"] for shape in ingest["application/json"]["schema"]["oneOf"]] == ["array", "object"]
    assert reconcile == {"text/csv": {"schema": {"type": "string"}}}
    simulate = doc["paths"]["/api/v1/finance/simulate"]["post"]["requestBody"]["content"]
    assert simulate["application/json"]["schema"]["type"] == "object"  # what the endpoint takes


async def test_openapi_says_what_each_answer_is(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path, media in (
        ("/api/v1/tenants/{tenant}/export.csv", "text/csv"),
        ("/api/v1/tenants/{tenant}/audit.csv", "text/csv"),
        ("/api/v1/tenants/{tenant}/export.parquet", "application/vnd.apache.parquet"),
    ):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == [media], path
    # successes other than 200 are not errors
    error = {"$ref": "#/components/schemas/Error"}
    assert paths["/api/v1/events"]["post"]["responses"]["207"]["content"] == {"application/json": {}}
    assert paths["/api/v1/periods/{period}/close"]["post"]["responses"]["201"]["content"] == {
        "application/json": {}
    }
    assert (
        paths["/api/v1/events"]["post"]["responses"]["422"]["content"]["application/json"]["schema"] == error
    )
    # windows take plain dates, as the docs show, or date-times
    start = next(p for p in paths["/api/v1/usage/totals"]["get"]["parameters"] if p["name"] == "from")
    assert [shape["format"] for shape in start["schema"]["anyOf"]] == ["date", "date-time"]
    totals = await client.get("/api/v1/usage/totals", params={"from": "2026-03-01", "to": "2026-04-01"},
                              headers={"Authorization": "Bearer admin-token-0123456789"})  # fmt: skip
    assert totals.status_code == 200


async def test_docs_page_lists_endpoints_and_fetches_nothing(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for endpoint in ENDPOINTS:
        assert endpoint.path in r.text
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", r.text)  # no CDN, no remote asset
    assert "<script" not in r.text


def test_cli_hashes_and_makes_tokens() -> None:
    runner = CliRunner()
    out = runner.invoke(api, ["--hash-token", "secret-token-123456"])
    assert out.exit_code == 0 and out.output.strip() == hash_token("secret-token-123456")
    made = runner.invoke(api, ["--new-token"])
    token = re.search(r"token  = (\S+)", made.output)
    assert token is not None and hash_token(token.group(1)) in made.output


def test_cli_without_tokens_is_a_usage_error(monkeypatch: object) -> None:
    runner = CliRunner(env={"OUTLAY_API_TOKENS": ""})
    out = runner.invoke(api, ["--url", "memory://"])
    assert out.exit_code == 2 and "OUTLAY_API_TOKENS" in out.output


def test_a_real_server_in_a_thread_serves_the_api() -> None:
    import socket
    import threading

    import uvicorn

    from outlay import Outlay
    from outlay.api import create_app

    from .conftest import ACME, TOKENS, auth, cloud

    outlay = Outlay("memory://")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(outlay, tokens=TOKENS), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for _ in range(200):
                if server.started:
                    break
                threading.Event().wait(0.05)
            assert c.post("/api/v1/events", json=[cloud()], headers=auth(ACME)).status_code == 200
            r = c.get("/api/v1/usage/totals", params={"from": "2026-03-01", "to": "2026-04-01"},
                      headers=auth(ACME))  # fmt: skip
            assert r.json()["totals"]["cost"] == "0.1"
    finally:
        server.should_exit = True
        thread.join(10)
        outlay.close()


def test_cli_refuses_at_start_a_ledger_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, nats_url: str
) -> None:
    # On a shared stream the API only reads the ledger the workers write. A typo in ?schema= used
    # to create a new, empty ledger and answer "no spend"; an unreachable server, a 503 on every
    # request after a start that looked fine.
    import uuid

    import psycopg
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served a ledger it cannot read"))
    monkeypatch.chdir(tmp_path)
    schema = f"t_missing_{uuid.uuid4().hex[:10]}"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\nname = "fin"\nsha256 = "{hash_token("t" * 32)}"\nrole = "admin"\n')
    env = {"OUTLAY_STREAM_URL": nats_url, "OUTLAY_URL": None}
    for ledger, message in (
        (f"{postgres_url}?schema={schema}", "no ledger"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot connect"),
    ):
        out = CliRunner(env={**env, "OUTLAY_LEDGER_URL": ledger}).invoke(api, ["--tokens", str(tokens)])
        assert out.exit_code == 1 and message in out.output, out.output
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None
    assert not (tmp_path / ".outlay").exists()
