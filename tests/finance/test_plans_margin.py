"""Plans file and margins: exact arithmetic, unpriced usage flagged, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay._errors import ConfigError, InvalidInput
from outlay.finance import Proposal, load_plans, margins, parse_plans, simulate
from outlay.ledger import InMemoryLedger

from .conftest import MARCH, D, event

PLANS = """
[tenants.acme]
model = "flat"
monthly_fee = "1.00"

[tenants.globex]
model = "per_seat"
seat_price = "0.15"
seats = 3

[tenants.initech]
model = "consumption"
markup = "1.3"

[tenants.hooli]
model = "consumption"
per_1k_tokens = "0.002"
"""


def test_plans_file_reads_every_model_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(PLANS)
    plans = load_plans(path)
    assert plans.get("acme").monthly_fee == D("1.00")  # type: ignore[union-attr]
    assert plans.get("globex").revenue(None, 0) == D("0.45")  # type: ignore[union-attr]
    assert plans.get("initech").revenue(D("0.1"), 0) == D("0.13")  # type: ignore[union-attr]
    assert plans.get("hooli").revenue(None, 1500) == D("0.003")  # type: ignore[union-attr]
    assert load_plans(PLANS).by_tenant.keys() == plans.by_tenant.keys()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[tenants.a]\nmodel = "flat"\nmonthly_fee = 1.5\n', "tenants.a.monthly_fee"),
        ('[tenants.a]\nmodel = "flat"\n', "tenants.a.monthly_fee"),
        ('[tenants.a]\nmodel = "free"\n', "tenants.a.model"),
        ('[tenants.a]\nmodel = "per_seat"\nseat_price = "1"\nseats = -1\n', "tenants.a.seats"),
        ('[tenants.a]\nmodel = "per_seat"\nseat_price = "1"\nseats = 2\nfee = "1"\n', "tenants.a.fee"),
        ('[tenants.a]\nmodel = "per_seat"\nseat_price = "1"\nseats = 1000000001\n', "tenants.a.seats"),
        ('[tenants.a]\nmodel = "consumption"\n', "tenants.a"),
        ('[tenants.a]\nmodel = "consumption"\nmarkup = "1"\nper_1k_tokens = "1"\n', "tenants.a"),
        ('[tenants.a]\nmodel = "consumption"\nmarkup = "-1"\n', "tenants.a.markup"),
        ('[tenants.a]\nmodel = "flat"\nmonthly_fee = "abc"\n', "tenants.a.monthly_fee"),
        ("tenants = 3\n", "tenants"),
        ('[tenants.a]\nmodel = "consumption"\nmarkup = "1e30"\n', "tenants.a.markup"),
        ('[tenants.a]\nmodel = "flat"\nmonthly_fee = "0.0000000000001"\n', "tenants.a.monthly_fee"),
        ('[tenant.a]\nmodel = "flat"\n', "tenant"),
        ("[tenants.a\n", "plans"),
    ],
)
def test_bad_plans_file_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_plans(text if "\n" in text else text + "\n")
    assert info.value.field == field


def test_missing_plans_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read plans file"):
        load_plans(tmp_path / "nope.toml")


def test_margins_are_exact_per_model(ledger: InMemoryLedger) -> None:
    ledger.write([
        event(cost=D("0.1")), event(cost=D("0.2")),                         # acme: cost 0.3
        event(tenant_id="globex", cost=D("0.000000000000000001")),          # globex: tiny cost
        event(tenant_id="initech", cost=D("0.25")),
        event(tenant_id="hooli", cost=D("0.01")),                           # 1500 tokens
        event(tenant_id="acme", cost=D("9"), environment="staging"),        # not production
        event(tenant_id="acme", cost=D("9"), time=MARCH.replace(month=4)),  # not March
    ])  # fmt: skip
    rows = {r.tenant: r for r in margins(ledger, parse_plans(_doc()), "2026-03")}
    assert rows["acme"].cost == D("0.3") and rows["acme"].margin == D("0.70")
    assert rows["acme"].ratio == D("0.7") and rows["acme"].bound == "exact"
    assert rows["globex"].margin == D("0.449999999999999999")
    assert rows["initech"].revenue == D("0.325") and rows["initech"].margin == D("0.075")
    assert rows["hooli"].revenue == D("0.003") and rows["hooli"].margin == D("-0.007")
    assert rows["hooli"].to_json()["margin"] == "-0.007"
    below = margins(ledger, parse_plans(_doc()), "2026-03", below=D("0.5"))
    assert [r.tenant for r in below] == ["hooli", "initech"]


def test_unpriced_usage_is_flagged_never_zero(ledger: InMemoryLedger) -> None:
    ledger.write([
        event(cost=D("0.5")), event(priced=False),                     # acme: known 0.5, one unknown
        event(tenant_id="initech", priced=False),                      # initech: all unknown
        event(tenant_id="stranger", cost=D("2")),                      # no plan
    ])  # fmt: skip
    rows = {r.tenant: r for r in margins(ledger, parse_plans(_doc()), "2026-03")}
    assert rows["acme"].bound == "at_most" and rows["acme"].unpriced_events == 1
    assert rows["acme"].margin == D("0.5")  # revenue 1.00 - known cost 0.5: at most
    assert rows["initech"].margin is None and rows["initech"].bound == "unknown"
    assert rows["initech"].to_json()["cost"] is None
    assert rows["stranger"].plan is None and rows["stranger"].margin is None
    # a margin that is only an upper bound cannot be ruled out as "below"
    below = {r.tenant for r in margins(ledger, parse_plans(_doc()), "2026-03", below=D("0.1"))}
    assert {"acme", "initech", "stranger"} <= below
    assert "globex" not in below  # a plan with no spend has its whole fee as margin


def test_a_tenant_with_a_plan_and_no_spend_has_its_revenue_as_margin(ledger: InMemoryLedger) -> None:
    rows = {r.tenant: r for r in margins(ledger, parse_plans(_doc()), "2026-03")}
    assert rows["globex"].margin == D("0.45") and rows["globex"].cost == 0
    # a markup plan with nothing used: revenue, cost and margin are a known, exact 0
    idle = rows["initech"]
    assert (idle.revenue, idle.cost, idle.margin, idle.bound) == (0, 0, 0, "exact")
    assert "initech" not in {
        r.tenant for r in margins(ledger, parse_plans(_doc()), "2026-03", below=D("0.1"))
    }


def test_a_fixed_fee_over_a_cost_wholly_unknown_has_an_unknown_margin(ledger: InMemoryLedger) -> None:
    ledger.write([event(priced=False)])  # acme (a flat fee): every event unpriced
    acme = {r.tenant: r for r in margins(ledger, parse_plans(_doc()), "2026-03")}["acme"]
    assert (acme.cost, acme.margin, acme.ratio, acme.bound) == (None, None, None, "unknown")


@pytest.mark.parametrize(
    "period", ["2026-3", "2026-13", "26-03", "1999-12", "2026-03-01", "abcd-ef", "２０２６-０３", "2026-+3"]
)
def test_bad_period_is_refused(ledger: InMemoryLedger, period: str) -> None:
    with pytest.raises(InvalidInput) as info:
        margins(ledger, parse_plans(_doc()), period)
    assert info.value.field == "period"


def test_simulator_prices_history_exactly(ledger: InMemoryLedger) -> None:
    ledger.write([event(cost=D("0.1")), event(cost=D("0.2")), event(tenant_id="globex", priced=False)])
    plans = parse_plans(_doc())
    rows = {
        r.tenant: r.to_json() for r in simulate(ledger, Proposal(markup=D("1.3")), "2026-03", plans=plans)
    }
    assert rows["acme"] == {"tenant": "acme", "cost": "0.3", "current": "1", "proposed": "0.39",
                            "change": "-0.61", "unpriced_events": 0, "complete": True}  # fmt: skip
    assert rows["globex"]["proposed"] is None and rows["globex"]["complete"] is False
    by_tokens = simulate(ledger, Proposal(per_1m_tokens=D("2.5")), "2026-03", plans=plans)
    assert [r.proposed for r in by_tokens] == [D("0.0075"), D("0.00375")]  # 3000 and 1500 tokens
    with pytest.raises(InvalidInput, match="exactly one"):
        Proposal(markup=D(1), per_1m_tokens=D(1))
    with pytest.raises(InvalidInput) as info:
        Proposal(markup=D(-1))
    assert info.value.field == "markup"


def _doc() -> dict[str, object]:
    import tomllib

    return tomllib.loads(PLANS)


def test_below_as_a_string_or_int_is_read_exactly_and_other_types_are_named(ledger: InMemoryLedger) -> None:
    """``margins(..., below="0.5")`` raised a bare TypeError (Decimal < str) from deep inside."""
    ledger.write([event(cost=D("0.3")), event(tenant_id="hooli", cost=D("0.01"))])
    plans = parse_plans(_doc())
    exact = [r.tenant for r in margins(ledger, plans, "2026-03", below=D("0.5"))]
    assert [r.tenant for r in margins(ledger, plans, "2026-03", below="0.5")] == exact
    assert [r.tenant for r in margins(ledger, plans, "2026-03", below=1)] == [
        r.tenant for r in margins(ledger, plans, "2026-03", below=D(1))
    ]
    for bad in ("half", 0.5, "NaN", [1]):
        with pytest.raises(InvalidInput) as info:
            margins(ledger, plans, "2026-03", below=bad)  # type: ignore[arg-type]
        assert info.value.field == "below"


def test_rates_within_their_bounds_times_any_ledger_cost_stay_exact(ledger: InMemoryLedger) -> None:
    # The largest markup the plans file takes, over a cost the ledger takes (< 10^15, 36 places):
    # their exact product has 69 digits, more than money's 60 — it must not raise (nor round).
    cost = D("12345678901.123456789012345678901234567890123456")
    markup = D("123456789.123456789012")
    ledger.write([event(cost=cost)])
    plans = load_plans(f'[tenants.acme]\nmodel = "consumption"\nmarkup = "{markup}"\n')
    [row] = margins(ledger, plans, "2026-03")
    exact = D("1524157876681908343.057613293440367628230836762725674745506024265472")
    assert row.revenue == exact and row.bound == "exact"
    assert row.margin == D("1524157864336229441.934156504428021949329602194835551289506024265472")
    [sim] = simulate(ledger, Proposal(markup=markup), "2026-03", plans=plans)
    assert sim.proposed == exact and sim.to_json()["change"] == "0"


def test_a_tiny_fee_against_a_big_cost_still_has_a_ratio(ledger: InMemoryLedger) -> None:
    ledger.write([event(cost=D("999999999999999")) for _ in range(20)])
    tiny = load_plans('[tenants.acme]\nmodel = "flat"\nmonthly_fee = "0.000000000001"\n')
    [row] = margins(ledger, tiny, "2026-03")  # a ratio of -10^28, to 6 places: 35 digits
    assert row.ratio == D("-19999999999999979999999999999.000000")
