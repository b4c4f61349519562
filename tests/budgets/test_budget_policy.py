"""Policies: validation, period windows in a tenant's time zone, downgrade maps, config files."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from outlay._errors import ConfigError, InvalidInput
from outlay.budgets import (
    Budget,
    BudgetEngine,
    BudgetExceeded,
    DowngradeMap,
    InMemoryBudgetStore,
    Plans,
    RunGuards,
    Scope,
    load_plans,
    load_policies,
)

from .conftest import FakeClock

D = Decimal


def ts(*args: int) -> float:
    year, month, day, hour, minute = (*args, 0, 0)[:5]
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


# --- Budget validation -------------------------------------------------------------------------


def test_amounts_are_exact_decimals_from_str_int_and_decimal() -> None:
    budget = Budget(limit="0.50", soft=D("0.4"), scope="tenant")
    assert budget.limit == D("0.50")
    assert budget.soft == D("0.4")
    assert Budget(limit=3, scope="tenant").limit == D(3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0.5}, "limit"),
        ({"limit": "1", "soft": 0.2}, "soft"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1", "soft": "2"}, "soft"),
        ({"limit": "1", "scope": "planet"}, "scope"),
        ({"limit": "1", "scope": "tenant", "period": "fortnight"}, "period"),
        ({"limit": "1", "scope": "tenant", "period": "rolling:0"}, "period"),
        ({"limit": "1", "scope": "tenant", "period": "run"}, "period"),
        ({"limit": "1", "scope": "run", "period": "month"}, "period"),
        ({"limit": "1", "currency": "usd"}, "currency"),
        ({"limit": "1", "scope": "tenant", "timezone": "Mars/Olympus"}, "timezone"),
        ({"limit": "1", "downgrade": {"gpt-4o": "gpt-4o-mini"}}, "downgrade"),
        ({"limit": "1", "soft": "1", "downgrade": {"a": "b*"}}, "downgrade['a']"),
        ({}, "limit"),
        ({"limit": "1", "scope": "tenant", "guards": RunGuards(max_calls=3)}, "guards"),
        ({"limit": "1", "guards": {"max_calls": 3}}, "guards"),
    ],
)
def test_bad_budgets_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Budget(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_default_periods() -> None:
    assert Budget(limit="1").period == "run"
    assert Budget(limit="1", scope="request").period == "run"
    assert Budget(limit="1", scope="tenant").period == "month"
    rolling = Budget(limit="1", scope="user", period="rolling:2h")
    assert rolling.window == 7200
    assert rolling.describe() == "rolling 2h"


def test_counter_keys_bucket_spend_per_window() -> None:
    utc = ZoneInfo("UTC")
    now = ts(2026, 11, 3, 14, 5)
    assert Budget(limit="1", scope="tenant").counter_key("acme", now, utc) == "tenant:acme:month:2026-11"
    assert (
        Budget(limit="1", scope="feature", period="day").counter_key("s", now, utc)
        == "feature:s:day:2026-11-03"
    )
    assert (
        Budget(limit="1", scope="user", period="hour").counter_key("u", now, utc)
        == "user:u:hour:2026-11-03T14+0000"
    )
    assert (
        Budget(limit="1", scope="tenant", period="rolling:60").counter_key("a", now, utc)
        == "tenant:a:rolling:60"
    )
    assert Budget(limit="1").counter_key("r1", now, utc) == "run:r1"
    # an id with ':' cannot forge another tenant's key
    assert (
        Budget(limit="1", scope="tenant").counter_key("a:month", now, utc) == "tenant:a%3Amonth:month:2026-11"
    )


def test_scope_from_context_like_objects() -> None:
    class Ctx:
        tenant = "acme"
        workspace = None
        feature = "search"
        user = None
        run_id = "r2"
        parent_run_id = "r1"
        root_run_id = "r1"
        request_id = "q"

    scope = Scope.of(Ctx())
    assert (scope.tenant, scope.feature, scope.run, scope.request, scope.runs) == (
        "acme",
        "search",
        "r2",
        "q",
        ("r2", "r1"),
    )
    assert Scope.of({"tenant": "t", "run": "x"}).run == "x"
    with pytest.raises(InvalidInput, match="tenant"):
        Scope.of({"tenant": 7})


# --- month roll-over in the tenant's time zone --------------------------------------------------


def test_month_rolls_over_at_local_midnight_in_auckland_not_utc(clock: FakeClock) -> None:
    plans = Plans(["free"], {"kiwi": "free", "london": "free"}, timezones={"kiwi": "Pacific/Auckland"})
    engine = BudgetEngine(
        InMemoryBudgetStore(clock=clock), policies=[Budget(limit="1", scope="tenant")], plans=plans
    )
    clock.now = ts(2026, 3, 31, 10, 30)  # 23:30 on 31 March in Auckland (NZDT, UTC+13)
    for tenant in ("kiwi", "london"):
        engine.settle(engine.reserve({"tenant": tenant}, "1"))
        with pytest.raises(BudgetExceeded, match="monthly"):
            engine.reserve({"tenant": tenant}, "0.01")
    clock.now = ts(2026, 3, 31, 11, 30)  # 00:30 on 1 April in Auckland, still March in UTC
    engine.reserve({"tenant": "kiwi"}, "0.01")
    with pytest.raises(BudgetExceeded) as denied:
        engine.reserve({"tenant": "london"}, "0.01")
    assert denied.value.key == "tenant:london:month:2026-03"
    clock.now = ts(2026, 4, 1, 0, 0)
    engine.reserve({"tenant": "london"}, "0.01")


def test_budget_timezone_overrides_the_plans_one(clock: FakeClock) -> None:
    budget = Budget(limit="1", scope="tenant", period="day", timezone="America/Los_Angeles")
    engine = BudgetEngine(InMemoryBudgetStore(clock=clock), policies=[budget])
    clock.now = ts(2026, 7, 1, 3, 0)  # 20:00 on 30 June in Los Angeles
    assert engine.status({"tenant": "a"}, budget).key == "tenant:a:day:2026-06-30:America/Los_Angeles"


def test_per_user_and_feature_budgets_are_kept_per_tenant_unless_shared(clock: FakeClock) -> None:
    per_user = Budget(limit="1", scope="user", period="day", name="per-user")
    platform = Budget(limit="3", scope="feature", key="search", shared=True, name="platform")
    engine = BudgetEngine(InMemoryBudgetStore(clock=clock), policies=[per_user, platform])
    # globex claims acme's user id: it spends its own "alice" counter, never acme's
    engine.settle(engine.reserve({"tenant": "globex", "user": "alice", "feature": "search"}, "1"), "1")
    with pytest.raises(BudgetExceeded) as denied:
        engine.reserve({"tenant": "globex", "user": "alice"}, "0.01")
    assert denied.value.key.startswith("user:globex:alice:day:")
    engine.settle(engine.reserve({"tenant": "acme", "user": "alice", "feature": "search"}, "1"), "1")
    # the shared feature cap adds up every tenant's calls
    assert engine.status({"tenant": "acme", "feature": "search"}, platform).spent == Decimal(2)
    engine.reserve({"tenant": "initech", "feature": "search"}, "1")
    with pytest.raises(BudgetExceeded, match="feature search"):
        engine.reserve({"tenant": "hooli", "feature": "search"}, "0.01")


def test_two_calendars_of_one_scope_keep_two_counters(clock: FakeClock) -> None:
    utc = Budget(limit="25", scope="tenant", name="utc-month")
    auckland = Budget(limit="25", scope="tenant", timezone="Pacific/Auckland", name="nz-month")
    engine = BudgetEngine(InMemoryBudgetStore(clock=clock), policies=[utc, auckland])
    clock.now = ts(2026, 11, 30, 20, 0)  # 09:00 on 1 December in Auckland, November in UTC
    engine.settle(engine.reserve({"tenant": "a"}, "20"), "20")
    clock.now = ts(2026, 12, 1, 1, 0)  # December in UTC: the UTC month starts empty
    engine.settle(engine.reserve({"tenant": "a"}, "5"), "5")
    assert engine.status({"tenant": "a"}, utc).spent == Decimal(5)
    assert engine.status({"tenant": "a"}, auckland).spent == Decimal(25)
    with pytest.raises(Exception, match="shared is for the other scopes"):
        Budget(limit="1", scope="tenant", shared=True)


# --- downgrade maps -----------------------------------------------------------------------------


def test_downgrade_map_exact_then_globs_with_star_carried_over() -> None:
    dm = DowngradeMap({"gpt-4o": "gpt-4o-mini", "claude-opus-*": "claude-haiku-*", "gpt-4o*": "cheap"})
    assert dm.apply("gpt-4o") == "gpt-4o-mini"
    assert dm.apply("claude-opus-4-1-20250805") == "claude-haiku-4-1-20250805"
    assert dm.apply("gpt-4o-2024-08-06") == "cheap"
    assert dm.apply("gemini-2.5-pro") is None
    assert DowngradeMap({"a*b*c": "x*y*z"}).apply("a1b2c") == "x1y2z"
    assert DowngradeMap({"a.b*": "q*"}).apply("aXb1") is None  # '.' is literal, not a regex


# --- config files -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "budgets.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_policies(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[budget]]
name = "acme-monthly"
scope = "tenant"
key = "acme"
limit = "25.00"
soft = "20"
timezone = "Pacific/Auckland"
downgrade = { "gpt-4o" = "gpt-4o-mini", "claude-opus-*" = "claude-haiku-*" }

[[budget]]
scope = "feature"
period = "day"
limit = 5

[[budget]]
scope = "run"
limit = "1"
max_calls = 20
max_identical_calls = 3
max_cost_per_minute = "0.50"
""",
    )
    first, second, third = load_policies(path)
    assert (first.name, first.key, first.limit, first.soft, first.period) == (
        "acme-monthly",
        "acme",
        D("25.00"),
        D(20),
        "month",
    )
    assert first.downgrades is not None
    assert first.downgrades.apply("claude-opus-4") == "claude-haiku-4"
    assert (second.scope, second.period, second.limit) == ("feature", "day", D(5))
    assert third.guards is not None
    assert third.guards.max_cost_per_minute == D("0.50")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[budget]]\nname = "x"\nscope = "tenant"\nlimit = 25.0\n',
            r"budget\[0\] \(x\): limit: floats are not accepted",
        ),
        (
            '[[budget]]\nscope = "tenant"\nlimit = "1"\n[[budget]]\nscope = "galaxy"\nlimit = "1"\n',
            r"budget\[1\]: scope",
        ),
        ('[[budget]]\nscope = "tenant"\nlimt = "1"\n', r"budget\[0\]: unknown field\(s\) limt"),
        ('[[budget]]\nscope = "tenant"\nperiod = "week"\nlimit = "1"\n', r"budget\[0\]: period"),
        ('[[budget]]\nscope = 3\nlimit = "1"\n', r"budget\[0\]: scope: expected a string"),
        ("[[budget]]\nmax_calls = 0\n", r"max_calls"),
        # Guards on a tenant budget were accepted and never checked (a noisy tenant's "cost per
        # minute" silently unenforced): guards stop runs only.
        (
            '[[budget]]\nscope = "tenant"\nlimit = "10"\nmax_cost_per_minute = "0.01"\n',
            r"budget\[0\]: max_cost_per_minute: runaway guards stop runs: they need scope 'run'",
        ),
        # Decimal() reads these as 1000 and 5: an amount written so is refused, not guessed at.
        ('[[budget]]\nscope = "tenant"\nlimit = "1_000"\n', r"budget\[0\]: limit: not a plain decimal"),
        ('[[budget]]\nscope = "tenant"\nlimit = "\u0665"\n', r"budget\[0\]: limit: not a plain decimal"),
        # outlay.meter, the instrumented SDKs and the gateway reserve in USD (the catalog's and the
        # ledger's currency): a budget in another currency loaded, then refused every call.
        ('[[budget]]\nscope = "tenant"\nlimit = "1"\ncurrency = "EUR"\n', r"budget\[0\]: currency: .*USD"),
        ('[[budget]]\nscope = "tenant"\nlimit = "1"\ncurrency = "XYZ"\n', r"budget\[0\]: currency: .*USD"),
        ("budgets = 1\n", "unknown top-level"),
        ("[[budget]\n", "not valid TOML"),
    ],
)
def test_bad_policy_files_name_entry_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_policies(path)
    assert str(path) in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policies(tmp_path / "nope.toml")


def test_plans_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'tiers = ["free", "pro", "enterprise"]\ndefault_tier = "free"\n[tenants]\nglobex = "pro"\n'
        'acme = { tier = "enterprise", timezone = "Pacific/Auckland" }\n',
        "plans.toml",
    )
    plans = load_plans(path)
    assert plans.tier_of("acme") == "enterprise"
    assert plans.tier_of("unknown") == "free"
    assert plans.timezones["acme"] == "Pacific/Auckland"
    assert plans.allows("acme", "pro")
    assert not plans.allows("globex", "enterprise")
    with pytest.raises(InvalidInput, match="unknown tier 'platinum'"):
        plans.allows("acme", "platinum")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tiers = ["free"]\n[tenants]\na = "gold"\n', r"tenants\.a\.tier: unknown tier 'gold'"),
        ("tiers = []\n", "tiers"),
        ('tiers = ["a", "a"]\n', "listed twice"),
        (
            'tiers = ["a"]\n[tenants]\nx = { tier = "a", timezone = "Nowhere/Land" }\n',
            r"tenants\.x\.timezone",
        ),
        ('tiers = ["a"]\n[tenants]\nx = { tier = "a", colour = "red" }\n', "colour"),
        ('tiers = ["a"]\ndefault_tier = "b"\n', "default_tier"),
        ('tiers = ["a"]\ndefault_tier = ["a"]\n', "default_tier"),  # not a TypeError (unhashable)
        ('tiers = ["a"]\nprice = 3\n', "unknown field"),
    ],
)
def test_bad_plans_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_plans(write(tmp_path, text, "plans.toml"))
    if "default_tier" in text and "unknown field" not in expected:
        assert info.value.field == "default_tier"  # a caller can tell which field, not only read it


def test_the_documented_downgrade_map_switches_to_models_the_catalog_prices(clock: FakeClock) -> None:
    """docs/budgets.md's map (what users copy): its old "claude-opus-*" = "claude-haiku-*" made
    claude-haiku-4-1, which no provider serves, so outlay.meter and the gateway never switched."""
    from outlay.budgets import BudgetEngine, InMemoryBudgetStore
    from outlay.pricing import default_catalog

    catalog = default_catalog()
    budget = Budget(limit="10", soft="0", scope="tenant", downgrade={
        "gpt-4o": "gpt-4o-mini", "claude-opus-*": "claude-haiku-4-5", "gpt-4.1-20*": "gpt-4.1-mini-20*",
    })  # fmt: skip
    engine = BudgetEngine(InMemoryBudgetStore(clock=clock), policies=[budget])
    for provider, model, cheaper in (
        ("anthropic", "claude-opus-4-1", "claude-haiku-4-5"),
        ("openai", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14"),
        ("openai", "gpt-4o", "gpt-4o-mini"),
    ):

        def cost_of(name: str, provider: str = provider) -> Decimal | None:
            return catalog.estimate(provider=provider, model=name, input_tokens=1000, max_output_tokens=500)

        assert engine.model_for({"tenant": "acme"}, model, cost_of=cost_of) == (cheaper, True)
