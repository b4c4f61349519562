"""GET /api/v1/budgets/status: the counters admission checks, per tenant, on the stores the gateway
uses (SQLite shared by two processes' connections, Redis shared by replicas), and its bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from outlay import Outlay
from outlay._errors import ConfigError
from outlay.api import create_app
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetExceeded,
    InMemoryBudgetStore,
    RedisBudgetStore,
    Scope,
    SQLiteBudgetStore,
)
from outlay.keys import InMemoryKeyStore, SQLiteKeyStore

from .conftest import ACME, ADMIN, GLOBEX, TOKENS, auth, seed_events

D = Decimal
STATUS = "/api/v1/budgets/status"
# 2026-03-31 11:30 UTC: already April 1st in Auckland (UTC+13 until April 5th).
NOW = datetime(2026, 3, 31, 11, 30, tzinfo=UTC).timestamp()
POLICIES = [
    Budget("10", "8", scope="tenant", name="monthly"),
    Budget("2", scope="tenant", key="globex", period="day", name="globex-vip"),
    Budget("3", scope="feature", period="rolling:1h", name="feature-hourly"),
    Budget("1", scope="workspace", key="ws-1", period="day", name="ws-1-daily"),
    Budget("100", scope="feature", key="search", name="search-platform-cap", shared=True),
    Budget("0.50", name="per-run"),
    Budget("0.10", scope="request", name="per-request"),
]
POLICIES_TOML = """
[[budget]]
name = "monthly"
scope = "tenant"
limit = "10"
soft = "8"
"""


def rows_by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in answer["rows"]}


async def get(client: httpx.AsyncClient, token: str, **params: str) -> httpx.Response:
    return await client.get(STATUS, params=params, headers=auth(token))


@pytest.fixture
def outlay() -> Iterator[Outlay]:
    # acme and globex have recorded events (the admin lists them); nobody else has
    instance = Outlay("memory://")
    for event in seed_events():
        instance.record(event)
    yield instance
    instance.close()


@pytest.fixture
def store() -> InMemoryBudgetStore:
    return InMemoryBudgetStore(clock=lambda: NOW)


@pytest.fixture
def engine(store: InMemoryBudgetStore) -> BudgetEngine:
    """The gateway's engine: the same policies on the same store."""
    return BudgetEngine(store, policies=POLICIES)


@pytest.fixture
def app(outlay: Outlay, store: InMemoryBudgetStore) -> Starlette:
    return create_app(outlay, tokens=TOKENS, budgets=POLICIES, budget_store=store)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c


async def test_status_shows_spent_held_and_remaining_as_admission_left_them(
    client: httpx.AsyncClient, engine: BudgetEngine
) -> None:
    settled = engine.reserve({"tenant": "acme"}, "4")
    engine.settle(settled, "3.25")
    engine.reserve({"tenant": "acme"}, "5")  # in flight: held, not spent
    engine.settle(engine.reserve({"tenant": "globex"}, "1.5"), "1.5")

    r = await get(client, ACME)
    assert r.status_code == 200
    answer = r.json()
    assert answer["configured"] is True and answer["tenant"] == "acme"
    assert answer["time"] == datetime.fromtimestamp(NOW, UTC).isoformat()
    monthly = rows_by_name(answer)["monthly"]
    assert monthly == {
        "tenant": "acme", "name": "monthly", "source": "policies", "key_id": None, "scope": "tenant",
        "scope_key": "acme", "shared": False, "counter": "tenant:acme:month:2026-03", "period": "month",
        "bucket": "2026-03",
        "window": {"from": "2026-03-01T00:00:00+00:00", "to": "2026-04-01T00:00:00+00:00"},
        "timezone": "UTC", "currency": "USD", "limit": "10", "soft": "8", "spent": "3.25", "reserved": "5",
        "remaining": "1.75", "soft_reached": True, "hard_reached": False,
    }  # fmt: skip
    # exactly what the engine itself reports for the counter it reserves on
    status = engine.status(Scope(tenant="acme"), POLICIES[0])
    assert (status.key, status.spent, status.reserved, status.remaining) == (
        "tenant:acme:month:2026-03", D("3.25"), D("5"), D("1.75"),
    )  # fmt: skip
    # per run/request budgets are not listed; feature and workspace ones need the id named
    assert set(rows_by_name(answer)) == {"monthly"}
    assert answer["omitted"] == {"feature": 2, "workspace": 1, "run": 1, "request": 1}


async def test_hard_limit_reached_is_what_makes_the_engine_refuse(
    client: httpx.AsyncClient, engine: BudgetEngine
) -> None:
    engine.settle(engine.reserve({"tenant": "acme"}, "10"), "10")
    row = rows_by_name((await get(client, ACME)).json())["monthly"]
    assert (row["remaining"], row["soft_reached"], row["hard_reached"]) == ("0", True, True)
    with pytest.raises(BudgetExceeded):
        engine.reserve({"tenant": "acme"}, "0.01")
    # settled past the limit (the call cost more than its estimate): remaining never goes negative
    engine.settle(engine.reserve({"tenant": "globex"}, "1"), "12.5")
    over = rows_by_name((await get(client, ADMIN, tenant="globex")).json())["monthly"]
    assert (over["spent"], over["remaining"], over["hard_reached"]) == ("12.5", "0", True)


async def test_admin_lists_every_tenant_and_tenant_pinned_policies(
    client: httpx.AsyncClient, engine: BudgetEngine
) -> None:
    engine.settle(engine.reserve({"tenant": "globex"}, "1.5"), "1.5")
    answer = (await get(client, ADMIN)).json()
    assert answer["tenant"] is None
    assert answer["omitted"] == {"feature": 2, "workspace": 1, "run": 1, "request": 1}
    listed = [(row["tenant"], row["name"], row["spent"]) for row in answer["rows"]]
    assert listed == [
        ("acme", "monthly", "0"),
        ("globex", "monthly", "1.5"),
        ("globex", "globex-vip", "1.5"),  # pinned to globex, its day counter
    ]
    vip = rows_by_name((await get(client, ADMIN, tenant="globex")).json())["globex-vip"]
    assert (vip["counter"], vip["bucket"], vip["remaining"]) == (
        "tenant:globex:day:2026-03-31",
        "2026-03-31",
        "0.5",
    )


async def test_a_tenant_token_sees_only_its_own_budgets(
    client: httpx.AsyncClient, engine: BudgetEngine
) -> None:
    engine.settle(engine.reserve({"tenant": "globex"}, "1.5"), "1.5")
    own = await get(client, ACME)
    assert {row["tenant"] for row in own.json()["rows"]} == {"acme"}
    assert "globex" not in own.text  # not even the name of its pinned policy
    assert (await get(client, ACME, tenant="acme")).status_code == 200
    other = await get(client, ACME, tenant="globex")
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    theirs = await get(client, GLOBEX)
    assert set(rows_by_name(theirs.json())) == {"monthly", "globex-vip"}


async def test_workspace_feature_and_user_budgets_are_listed_when_named(
    client: httpx.AsyncClient, engine: BudgetEngine
) -> None:
    engine.settle(
        engine.reserve({"tenant": "acme", "feature": "search", "workspace": "ws-1"}, "0.75"), "0.75"
    )
    answer = (await get(client, ADMIN, tenant="acme", feature="search", workspace="ws-1", user="u-9")).json()
    rows = rows_by_name(answer)
    assert set(rows) == {"monthly", "feature-hourly", "ws-1-daily", "search-platform-cap"}
    hourly = rows["feature-hourly"]
    assert (hourly["counter"], hourly["shared"], hourly["spent"], hourly["bucket"]) == (
        "feature:acme:search:rolling:3600",
        False,
        "0.75",
        None,
    )  # fmt: skip  (acme's own counter: another tenant's "search" calls are not on it)
    assert hourly["window"] == {"from": "2026-03-31T10:30:00+00:00", "to": "2026-03-31T11:30:00+00:00"}
    assert (rows["ws-1-daily"]["spent"], rows["ws-1-daily"]["remaining"]) == ("0.75", "0.25")
    cap = rows["search-platform-cap"]
    assert (cap["counter"], cap["shared"], cap["spent"]) == ("feature:search:month:2026-03", True, "0.75")
    assert answer["omitted"] == {"run": 1, "request": 1}
    # A tenant token sees its own counters, not one that adds up other tenants' calls (invariant 7).
    own = (await get(client, ACME, feature="search", workspace="ws-1", user="u-9")).json()
    assert set(rows_by_name(own)) == {"monthly", "feature-hourly", "ws-1-daily"}
    assert own["omitted"] == {"run": 1, "request": 1, "shared": 1}
    # a workspace the pinned policy is not for: only the other budgets apply
    other = rows_by_name((await get(client, ADMIN, tenant="acme", workspace="ws-2")).json())
    assert set(other) == {"monthly"}


async def test_calendar_buckets_follow_the_tenants_time_zone(
    outlay: Outlay, store: InMemoryBudgetStore
) -> None:
    auckland = Budget("5", scope="tenant", period="month", timezone="Pacific/Auckland", name="nz-month")
    engine = BudgetEngine(store, policies=[auckland])
    held = engine.reserve({"tenant": "acme"}, "1")
    app = create_app(outlay, tokens=TOKENS, budgets=[auckland], budget_store=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        row = (await get(c, ACME)).json()["rows"][0]
    # April already there; the zone is in the key (April in Auckland is not April in UTC)
    assert row["counter"] == held.keys[0].key == "tenant:acme:month:2026-04:Pacific/Auckland"
    assert row["window"] == {"from": "2026-04-01T00:00:00+13:00", "to": "2026-05-01T00:00:00+12:00"}
    assert (row["timezone"], row["reserved"]) == ("Pacific/Auckland", "1")


async def test_key_budgets_show_the_counters_the_gateway_holds(
    outlay: Outlay, store: InMemoryBudgetStore
) -> None:
    from outlay.gateway._outlay_hooks import OutlayHooks

    keys = InMemoryKeyStore()
    key, _ = keys.create("acme", feature="chat", budget="5/day", name="acme-chat")
    keys.create("globex", budget="9/month", name="globex-key")
    revoked, _ = keys.create("acme", budget="1/day", name="old-key")
    keys.revoke(revoked.id)
    engine = BudgetEngine(store)
    gateway_outlay = Outlay("memory://")
    hooks = OutlayHooks(keys, outlay=gateway_outlay, engine=engine, cache_ttl=0)
    try:
        # the gateway's own admissions for calls made with the key: one hold on the tenant and the
        # feature counters; the first call settled, the second still in flight
        scope = Scope(tenant="acme", feature="chat")
        (done,) = hooks._reserve(scope, key, D("1.5"), "gpt-4o", None, 60)
        engine.settle(done, "1.25")
        hooks._reserve(scope, key, D("1.5"), "gpt-4o", None, 60)
        app = create_app(outlay, tokens=TOKENS, budget_store=engine, keys=keys)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            answer = (await get(c, ACME)).json()
            admin = (await get(c, ADMIN)).json()
    finally:
        gateway_outlay.close()
    assert answer["configured"] is True
    rows = rows_by_name(answer)
    assert set(rows) == {"key acme-chat", "key acme-chat (chat)"}  # not the revoked key's
    tenant_row, feature_row = rows["key acme-chat"], rows["key acme-chat (chat)"]
    assert (tenant_row["source"], tenant_row["key_id"], tenant_row["counter"]) == (
        "key", key.id, "tenant:acme:day:2026-03-31",
    )  # fmt: skip
    assert (tenant_row["spent"], tenant_row["reserved"], tenant_row["remaining"]) == ("1.25", "1.5", "2.25")
    # the same calls on the tenant-qualified feature counter
    assert (feature_row["scope_key"], feature_row["shared"]) == ("acme/chat", False)
    feature_counter = (feature_row["spent"], feature_row["reserved"], feature_row["remaining"])
    assert feature_counter == ("1.25", "1.5", "2.25")
    assert {(r["tenant"], r["name"]) for r in admin["rows"]} >= {("globex", "key globex-key")}


async def test_status_on_a_sqlite_store_shared_with_the_gateways_engine(
    outlay: Outlay, tmp_path: Path
) -> None:
    path = tmp_path / "budgets.db"
    gateway_store = SQLiteBudgetStore(path, clock=lambda: NOW)
    api_store = SQLiteBudgetStore(path, clock=lambda: NOW)  # another connection, as another process has
    try:
        engine = BudgetEngine(gateway_store, policies=POLICIES)
        engine.settle(engine.reserve({"tenant": "acme"}, "2"), "1.75")
        in_flight = engine.reserve({"tenant": "acme"}, "0.5")
        app = create_app(outlay, tokens=TOKENS, budgets=POLICIES, budget_store=api_store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            before = rows_by_name((await get(c, ACME)).json())["monthly"]
            engine.settle(in_flight, "0.25")
            after = rows_by_name((await get(c, ACME)).json())["monthly"]
            engine.release(engine.reserve({"tenant": "acme"}, "1"))  # a failed call holds nothing
            released = rows_by_name((await get(c, ACME)).json())["monthly"]
    finally:
        gateway_store.close()
        api_store.close()
    assert (before["spent"], before["reserved"], before["remaining"]) == ("1.75", "0.5", "7.75")
    assert (after["spent"], after["reserved"], after["remaining"]) == ("2", "0", "8")
    assert released == after


async def test_status_on_redis_shared_by_replicas(outlay: Outlay, redis_url: str) -> None:
    prefix = f"outlay-test:{{{uuid.uuid4().hex}}}:"
    replica = RedisBudgetStore(redis_url, prefix=prefix)
    api_store = RedisBudgetStore(redis_url, prefix=prefix)
    try:
        engine = BudgetEngine(replica, policies=POLICIES)
        engine.settle(engine.reserve({"tenant": "acme"}, "3"), "2.000000001")
        engine.reserve({"tenant": "acme"}, "0.1")
        app = create_app(outlay, tokens=TOKENS, budgets=POLICIES, budget_store=api_store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            row = rows_by_name((await get(c, ACME)).json())["monthly"]
    finally:
        replica.clear()
        replica.close()
        api_store.close()
    month = datetime.now(UTC).strftime("%Y-%m")
    assert row["counter"] == f"tenant:acme:month:{month}"
    assert (row["spent"], row["reserved"], row["remaining"]) == ("2.000000001", "0.1", "7.899999999")


async def test_without_policies_the_answer_says_none_are_configured(outlay: Outlay) -> None:
    app = create_app(outlay, tokens=TOKENS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        r = await get(c, ACME)
        assert r.status_code == 200
        assert r.json()["configured"] is False and r.json()["rows"] == []
        assert "--budgets" in r.json()["message"]
        assert (await get(c, ACME, tenant="globex")).status_code == 403
        assert (await get(c, ADMIN)).json()["rows"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tennant": "acme"}, "tennant"),
        ({"feature": "search"}, "feature"),  # an admin must say whose calls
        ({"tenant": "acme", "user": ""}, "user"),
        ({"tenant": "acme", "workspace": "w" * 201}, "workspace"),
        ({"tenant": "acme\x00"}, "tenant"),
        ({"from": "2026-03-01"}, "from"),  # status is now: no window
    ],
)
async def test_bad_parameters_are_a_400_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await get(client, ADMIN, **params)
    assert r.status_code == 400, r.text
    assert (r.json()["error"], r.json()["field"]) == ("invalid_input", field)


async def test_repeated_tenant_is_a_400_and_an_unknown_tenant_a_404(client: httpx.AsyncClient) -> None:
    r = await client.get(STATUS + "?tenant=acme&tenant=globex", headers=auth(ADMIN))
    assert (r.status_code, r.json()["field"]) == (400, "tenant")
    missing = await get(client, ADMIN, tenant="initech")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


async def test_a_tenant_with_no_events_but_a_pinned_policy_has_a_status(outlay: Outlay) -> None:
    pinned = Budget("4", scope="tenant", key="initech", name="initech-monthly")
    app = create_app(outlay, tokens=TOKENS, budgets=[pinned], budget_store=InMemoryBudgetStore())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        r = await get(c, ADMIN, tenant="initech")
        everyone = await get(c, ADMIN)
    assert r.status_code == 200 and r.json()["rows"][0]["remaining"] == "4"
    assert [row["tenant"] for row in everyone.json()["rows"]] == ["initech"]  # the only one it applies to


def test_bad_budget_configuration_refuses_to_start(outlay: Outlay, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the budgets file"):
        create_app(outlay, tokens=TOKENS, budgets=tmp_path / "missing.toml", budget_store="memory://")
    broken = tmp_path / "budgets.toml"
    broken.write_text('[[budget]]\nscope = "tenant"\nlimit = 2.5\n')
    with pytest.raises(ConfigError, match="budget\\[0\\]"):
        create_app(outlay, tokens=TOKENS, budgets=broken, budget_store="memory://")
    with pytest.raises(ConfigError) as info:
        create_app(outlay, tokens=TOKENS, budgets=["10"], budget_store="memory://")  # type: ignore[list-item]
    assert info.value.field == "budgets"
    with pytest.raises(ConfigError) as bad_url:
        create_app(outlay, tokens=TOKENS, budgets=POLICIES, budget_store="ftp://budgets")
    assert bad_url.value.field == "budget_store"


async def test_the_environment_configures_it_as_it_does_the_gateway(
    outlay: Outlay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "budgets.toml").write_text(POLICIES_TOML)
    db = tmp_path / "state" / "budgets.db"
    monkeypatch.setenv("OUTLAY_BUDGETS_FILE", str(tmp_path / "budgets.toml"))
    monkeypatch.setenv("OUTLAY_BUDGET_URL", f"sqlite:{db}")
    app = create_app(outlay, tokens=TOKENS)
    async with app.router.lifespan_context(app):  # the app opened the store; shutdown closes it
        engine_store = SQLiteBudgetStore(db)
        try:
            engine = BudgetEngine(engine_store, policies=[Budget("10", "8", scope="tenant", name="monthly")])
            engine.settle(engine.reserve({"tenant": "acme"}, "9"), "9")
        finally:
            engine_store.close()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            row = rows_by_name((await get(c, ACME)).json())["monthly"]
    assert (row["spent"], row["soft_reached"], row["hard_reached"]) == ("9", True, False)


def test_cli_reports_the_gateways_key_budgets_and_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`outlay api --budgets FILE --url LEDGER`: keys.db and budgets.db beside the ledger, as the
    gateway lays them out by default, are found and reported."""
    import asyncio

    import uvicorn

    from outlay.cli._api import api

    for name in ("OUTLAY_KEYS_URL", "OUTLAY_BUDGET_URL", "OUTLAY_BUDGETS_FILE", "OUTLAY_PLANS_FILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "budgets.toml").write_text(POLICIES_TOML)
    with SQLiteKeyStore(tmp_path / "keys.db") as keys:
        key, _ = keys.create("acme", budget="3/month", name="acme-gw")
    store = SQLiteBudgetStore(tmp_path / "budgets.db")
    try:
        engine = BudgetEngine(store, policies=[Budget("10", "8", scope="tenant", name="monthly")])
        engine.settle(engine.reserve({"tenant": "acme"}, "1", budgets=key.policies), "0.5")
    finally:
        store.close()
    answers: list[dict[str, Any]] = []

    def serve(app: Starlette, **_: object) -> None:
        async def ask() -> None:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                    answers.append((await get(c, ACME)).json())

        asyncio.run(ask())

    monkeypatch.setattr(uvicorn, "run", serve)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": ACME, "tenant": "acme"}]}))
    out = CliRunner().invoke(
        api,
        [
            "--tokens",
            str(tokens),
            "--url",
            str(tmp_path / "outlay.db"),
            "--budgets",
            str(tmp_path / "budgets.toml"),
        ],
    )
    assert out.exit_code == 0, out.output
    rows = rows_by_name(answers[0])
    assert (rows["monthly"]["spent"], rows["key acme-gw"]["spent"]) == ("0.5", "0.5")
    assert rows["key acme-gw"]["remaining"] == "2.5"
    nope = str(tmp_path / "nope.toml")
    missing = CliRunner().invoke(api, ["--tokens", str(tokens), "--url", "memory://", "--budgets", nope])
    assert missing.exit_code == 1 and "cannot read the budgets file" in missing.output
