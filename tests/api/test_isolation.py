"""Auth and tenant isolation, endpoint by endpoint.

``CASES`` must name every endpoint of the route table: adding a route without an isolation case
here fails ``test_every_endpoint_has_an_isolation_case``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from outlay._errors import ConfigError
from outlay.api import ENDPOINTS, create_app, hash_token, load_tokens

from ._budget_cases import BUDGET_CASES
from ._export_cases import EXPORT_CASES
from ._finance_cases import FINANCE_CASES
from .conftest import ACME, ADMIN, GLOBEX, GLOBEX_MARKERS, TOKENS, WINDOW, auth, cloud

Check = Callable[[httpx.AsyncClient], Awaitable[None]]


def clean(r: httpx.Response) -> None:
    """Nothing of globex's may appear in an answer to acme's token."""
    assert r.status_code < 500, r.text
    text = r.text.lower()
    for marker in GLOBEX_MARKERS:
        assert marker not in text, (marker, r.request.url, r.text[:300])


async def acme_get(client: httpx.AsyncClient, path: str, **params: str) -> httpx.Response:
    r = await client.get(path, params=params, headers=auth(ACME))
    clean(r)
    return r


def filtered(path: str, *, key: str = "rows") -> Check:
    """A tenant-filterable read: own data only by default, another tenant named -> 403."""

    async def check(client: httpx.AsyncClient) -> None:
        r = await acme_get(client, path, **WINDOW)
        assert r.status_code == 200
        assert r.json()[key], "the tenant sees its own data"
        other = await acme_get(client, path, **WINDOW, tenant="globex")
        assert other.status_code == 403 and other.json()["error"] == "forbidden"
        own = await acme_get(client, path, **WINDOW, tenant="acme")
        assert own.status_code == 200

    return check


def admin_only(path: str) -> Check:
    async def check(client: httpx.AsyncClient) -> None:
        r = await acme_get(client, path, **WINDOW)
        assert r.status_code == 403
        assert (await client.get(path, params=WINDOW, headers=auth(ADMIN))).status_code == 200

    return check


async def check_me(client: httpx.AsyncClient) -> None:
    r = await acme_get(client, "/api/v1/me")
    assert r.json() == {"name": "acme-app", "role": "tenant", "tenant": "acme"}


async def check_breakdown(client: httpx.AsyncClient) -> None:
    await filtered("/api/v1/usage/breakdown")(client)
    r = await acme_get(client, "/api/v1/usage/breakdown", **WINDOW, by="tenant,model")
    assert {row["tenant"] for row in r.json()["rows"]} == {"acme"}


async def check_events_read(client: httpx.AsyncClient) -> None:
    await filtered("/api/v1/events", key="events")(client)
    r = await acme_get(client, "/api/v1/events", limit="1000")
    assert {e["tenant_id"] for e in r.json()["events"]} == {"acme"}


async def check_ingest(client: httpx.AsyncClient) -> None:
    mine, theirs, nobody = (
        cloud(tenant_id="acme"),
        cloud(tenant_id="globex"),
        cloud(tenant_id=None, origin="x"),
    )
    r = await client.post("/api/v1/events", json=[mine, theirs, nobody], headers=auth(ACME))
    assert r.status_code == 207
    assert r.json()["accepted"] == [mine["id"]]
    assert [(e["index"], e["status"]) for e in r.json()["errors"]] == [(1, 403), (2, 403)]
    only_theirs = await client.post("/api/v1/events", json=[cloud(tenant_id="globex")], headers=auth(ACME))
    assert only_theirs.status_code == 403
    # and nothing of theirs reached the ledger
    totals = await client.get(
        "/api/v1/usage/totals", params={**WINDOW, "tenant": "globex"}, headers=auth(GLOBEX)
    )
    assert totals.json()["totals"]["events"] == 4


async def check_run(client: httpx.AsyncClient) -> None:
    assert (await acme_get(client, "/api/v1/runs/acme-run")).status_code == 200
    # another tenant's run answers exactly like a run that does not exist (the id is only echoed)
    theirs = await client.get("/api/v1/runs/globex-run", headers=auth(ACME))
    missing = await client.get("/api/v1/runs/globex-run-x", headers=auth(ACME))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"].replace("globex-run", "?") == missing.json()["message"].replace(
        "globex-run-x", "?"
    )


async def check_invoice(client: httpx.AsyncClient) -> None:
    assert (await acme_get(client, "/api/v1/tenants/acme/invoice", period="2026-03")).status_code == 200
    r = await acme_get(client, "/api/v1/tenants/globex/invoice", period="2026-03")
    assert r.status_code == 403


async def check_export(client: httpx.AsyncClient) -> None:
    for what in ("invoice", "entries"):
        own = await acme_get(client, "/api/v1/tenants/acme/export.csv", period="2026-03", what=what)
        assert own.status_code == 200
        assert "acme" in own.text if what == "entries" else "search" in own.text
        theirs = await acme_get(client, "/api/v1/tenants/globex/export.csv", period="2026-03", what=what)
        assert theirs.status_code == 403


async def check_decisions(client: httpx.AsyncClient) -> None:
    await filtered("/api/v1/budgets/decisions", key="decisions")(client)


CASES: dict[tuple[str, str], Check] = {
    ("GET", "/api/v1/me"): check_me,
    ("GET", "/api/v1/usage/totals"): filtered("/api/v1/usage/totals", key="totals"),
    ("GET", "/api/v1/usage/breakdown"): check_breakdown,
    ("GET", "/api/v1/usage/timeseries"): filtered("/api/v1/usage/timeseries", key="series"),
    ("GET", "/api/v1/tenants"): filtered("/api/v1/tenants"),
    ("GET", "/api/v1/concentration"): admin_only("/api/v1/concentration"),
    ("GET", "/api/v1/unattributed"): admin_only("/api/v1/unattributed"),
    ("GET", "/api/v1/unpriced"): filtered("/api/v1/unpriced"),
    ("GET", "/api/v1/events"): check_events_read,
    ("POST", "/api/v1/events"): check_ingest,
    ("GET", "/api/v1/runs/{run_id}"): check_run,
    ("GET", "/api/v1/tenants/{tenant}/invoice"): check_invoice,
    ("GET", "/api/v1/budgets/decisions"): check_decisions,
    ("GET", "/api/v1/tenants/{tenant}/export.csv"): check_export,
    **FINANCE_CASES,
    **EXPORT_CASES,
    **BUDGET_CASES,
}


def test_every_endpoint_has_an_isolation_case() -> None:
    routes = {(e.method, e.path) for e in ENDPOINTS}
    assert routes == set(CASES), f"add isolation cases for {routes - set(CASES)}"


@pytest.mark.parametrize("route", sorted(CASES), ids=" ".join)
async def test_tenant_token_sees_only_its_tenant(client: httpx.AsyncClient, route: tuple[str, str]) -> None:
    await CASES[route](client)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope-not-a-token-123", f"Basic {ADMIN}", f"Bearer {hash_token(ADMIN)}"]
)
async def test_every_endpoint_needs_a_valid_token(
    client: httpx.AsyncClient, endpoint: object, header: str | None
) -> None:
    path = endpoint.path.format(run_id="acme-run", tenant="acme", period="2026-03")  # type: ignore[attr-defined]
    headers = {"Authorization": header} if header else {}
    r = await client.request(endpoint.method, path, headers=headers, json=[cloud()])  # type: ignore[attr-defined]
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
@pytest.mark.parametrize("token", [ACME, ADMIN, None], ids=["tenant", "admin", "none"])
async def test_no_cache_may_keep_an_answer_for_another_caller(
    client: httpx.AsyncClient, endpoint: object, token: str | None
) -> None:
    """A tenant token's URL is every tenant's URL (the token scopes it): a shared cache or a proxy
    set to cache must neither keep the answer nor give it to another token."""
    path = endpoint.path.format(run_id="acme-run", tenant="acme", period="2026-03")  # type: ignore[attr-defined]
    params = {"period": "2026-03"} if "period" in endpoint.params else {}  # type: ignore[attr-defined]
    headers = auth(token) if token else {}
    r = await client.request(endpoint.method, path, params=params, headers=headers, json=[cloud()])  # type: ignore[attr-defined]
    assert r.headers["cache-control"] == "no-store", (r.status_code, r.headers)
    assert r.headers["vary"] == "Authorization"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
async def test_no_answer_may_be_sniffed_into_a_page(client: httpx.AsyncClient, endpoint: object) -> None:
    """Answers carry tenants' own strings (a feature named ``<script>...``) as JSON or CSV: a
    browser must take them for what the Content-Type says, never guess HTML."""
    path = endpoint.path.format(run_id="acme-run", tenant="acme", period="2026-03")  # type: ignore[attr-defined]
    params = {"period": "2026-03"} if "period" in endpoint.params else {}  # type: ignore[attr-defined]
    r = await client.request(endpoint.method, path, params=params, headers=auth(ACME), json=[cloud()])  # type: ignore[attr-defined]
    assert r.headers["x-content-type-options"] == "nosniff", (r.status_code, r.headers)


def test_tokens_from_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "tokens.toml"
    toml.write_text(f'[[tokens]]\nname = "ops"\nsha256 = "{hash_token(ADMIN)}"\nrole = "admin"\n'
                    f'[[tokens]]\nsha256 = "{hash_token(ACME)}"\ntenant = "acme"\n')  # fmt: skip
    tokens = load_tokens(toml)
    assert tokens.authenticate(f"Bearer {ADMIN}").is_admin
    assert tokens.authenticate(f"bearer {ACME}").tenant == "acme"
    assert ADMIN not in toml.read_text()  # only hashes are stored
    js = tmp_path / "tokens.json"
    js.write_text(json.dumps({"tokens": TOKENS}))
    monkeypatch.setenv("OUTLAY_API_TOKENS", str(js))
    assert len(load_tokens()) == 3
    monkeypatch.setenv("OUTLAY_API_TOKENS", json.dumps(TOKENS))
    assert load_tokens().authenticate(f"Bearer {GLOBEX}").tenant == "globex"


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([], "tokens"),
        ([{"token": "short", "role": "admin"}], "tokens[0].token"),
        ([{"token": ADMIN, "role": "root"}], "tokens[0].role"),
        ([{"token": ADMIN, "role": "tenant"}], "tokens[0].tenant"),
        ([{"token": ADMIN, "role": "admin", "tenant": "acme"}], "tokens[0].tenant"),
        ([{"sha256": "abc", "role": "admin"}], "tokens[0].sha256"),
        ([{"token": ADMIN, "sha256": hash_token(ADMIN), "role": "admin"}], "tokens[0]"),
        ([{"token": ADMIN, "role": "admin", "tenat": "x"}], "tokens[0]"),
        ([{"token": ADMIN, "role": "admin"}, {"token": ADMIN, "tenant": "a"}], "tokens[1]"),
    ],
)
def test_bad_token_config_is_refused(entries: list[dict[str, str]], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_app(object(), tokens=entries)  # type: ignore[arg-type]
    assert info.value.field == field


def test_no_tokens_at_all_refuses_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OUTLAY_API_TOKENS", raising=False)
    with pytest.raises(ConfigError, match="OUTLAY_API_TOKENS"):
        create_app(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[tokens]\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(tmp_path / "bad.toml")
    (tmp_path / "latin1.toml").write_bytes(b'[[tokens]]\ntenant = "caf\xe9"\n')  # a traceback before
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_tokens(tmp_path / "latin1.toml")
    assert info.value.field == "tokens"


def test_a_token_removed_from_the_tokens_file_is_revoked_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The file was read once at start: a token deleted from it (a leaked one, a departed
    customer's) kept working, pages and API alike, until the server restarted."""
    from outlay._errors import Unauthenticated
    from outlay.api import _auth

    monkeypatch.setattr(_auth, "_RECHECK", 0.0)
    path = tmp_path / "tokens.toml"
    admin = f'[[tokens]]\nname = "ops"\nsha256 = "{hash_token(ADMIN)}"\nrole = "admin"\n'
    acme = f'[[tokens]]\nname = "acme"\nsha256 = "{hash_token(ACME)}"\ntenant = "acme"\n'
    path.write_text(admin + acme)
    tokens = load_tokens(path)
    assert tokens.authenticate(f"Bearer {ACME}").tenant == "acme"

    path.write_text(admin)  # acme's token revoked
    with pytest.raises(Unauthenticated):
        tokens.authenticate(f"Bearer {ACME}")
    assert tokens.authenticate(f"Bearer {ADMIN}").is_admin

    path.write_text(admin + "[[tokens]]\nname = ")  # a half-written edit: the tokens stay as they were
    assert tokens.authenticate(f"Bearer {ADMIN}").is_admin
    assert "the tokens read before stay in use" in caplog.text
    path.unlink()  # so does a deleted file
    assert tokens.authenticate(f"Bearer {ADMIN}").is_admin

    replacement = tmp_path / "new.toml"  # an edit saved by rename, as editors do
    replacement.write_text(
        admin + acme.replace("acme", "globex").replace(hash_token(ACME), hash_token(GLOBEX))
    )
    replacement.rename(path)
    assert tokens.authenticate(f"Bearer {GLOBEX}").tenant == "globex"
    with pytest.raises(Unauthenticated):
        tokens.authenticate(f"Bearer {ACME}")
