"""Reports: exact breakdowns from rollups (and events at partial days), run trees, concentration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidInput
from outlay._money import money_str, money_sum
from outlay.events import CostEvent
from outlay.ledger import LedgerStore
from outlay.reporting import Reports, csv_cell, csv_value, render_csv, render_json

from .conftest import T0, D, LedgerFactory, awkward_events, event, unpriced

WEEK = ("2026-03-01", "2026-04-01")


def test_breakdown_by_several_keys(ledger: LedgerStore) -> None:
    ledger.write(
        [
            event(tenant_id="a", feature="search", model="m1", cost=D("0.1")),
            event(tenant_id="a", feature="search", model="m1", cost=D("0.000000018750000000")),
            event(tenant_id="a", feature="chat", model="m2", priced=False),
            event(tenant_id="b", feature="chat", model="m2", cost=D("3")),
            event(tenant_id=None, origin="cron", feature="chat", model="m2", cost=D("0.5")),
        ]
    )
    rows = Reports(ledger).breakdown("tenant,feature,model", *WEEK)
    assert [
        (r["tenant"], r["feature"], r["model"], r["events"], r["cost"], r["unpriced_events"]) for r in rows
    ] == [
        ("b", "chat", "m2", 1, "3", 0),
        (None, "chat", "m2", 1, "0.5", 0),
        ("a", "search", "m1", 2, "0.10000001875", 0),
        ("a", "chat", "m2", 1, None, 1),  # unknown cost is null and sorts last, never 0
    ]
    assert Reports(ledger).breakdown(["model"], *WEEK, tenant="a")[0]["cost"] == "0.10000001875"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.integers(0, 60 * 24 * 10),
    length=st.integers(1, 60 * 24 * 10),
    by=st.sampled_from([["tenant"], ["day"], ["model", "environment"], ["origin"]]),
)
def test_any_window_is_exact_to_the_microsecond(
    make_ledger: LedgerFactory, start: int, length: int, by: list[str]
) -> None:
    ledger = make_ledger()
    events = awkward_events(300, start=T0 - timedelta(days=1), step=timedelta(minutes=53))
    ledger.write(events)
    lo = T0 - timedelta(days=1) + timedelta(minutes=start)
    hi = lo + timedelta(minutes=length)
    inside = [e for e in events if lo <= e.time < hi]
    rows = Reports(ledger).breakdown(by, lo, hi)
    assert sum(r["events"] for r in rows) == len(inside)
    priced = [r["cost"] for r in rows if r["cost"] is not None]
    expected = [e.cost for e in inside if e.cost is not None]
    assert money_sum(D(c) for c in priced) == money_sum(expected)
    assert sum(r["unpriced_events"] for r in rows) == sum(1 for e in inside if not e.priced)


def test_tenants_and_unattributed_by_origin(ledger: LedgerStore) -> None:
    ledger.write(
        [
            event(tenant_id="a", cost=D("2")),
            event(tenant_id=None, origin="nightly-reindex", cost=D("0.75")),
            event(tenant_id=None, origin="nightly-reindex", cost=D("0.25")),
            event(tenant_id=None, origin="support-bot", priced=False),
            event(tenant_id=None, cost=D("0.5")),  # no origin either: still counted, never dropped
        ]
    )
    reports = Reports(ledger)
    assert [(r["tenant"], r["cost"], r["events"]) for r in reports.tenants(*WEEK)] == [
        ("a", "2", 1),
        (None, "1.5", 4),
    ]
    assert [(r["origin"], r["cost"], r["unpriced_events"]) for r in reports.unattributed(*WEEK)] == [
        ("nightly-reindex", "1", 0),
        (None, "0.5", 0),
        ("support-bot", None, 1),
    ]


def test_unpriced_by_provider_model_reason(ledger: LedgerStore) -> None:
    ledger.write(
        [
            unpriced(provider="acme-ai", model="x1", unpriced_reason="no price for acme-ai/x1"),
            unpriced(provider="acme-ai", model="x1", unpriced_reason="no price for acme-ai/x1"),
            unpriced(provider="openai", model="gpt-4o", unpriced_reason="stream cut before usage"),
            event(),
        ]
    )
    rows = Reports(ledger).unpriced(*WEEK)
    assert [(r["provider"], r["model"], r["reason"], r["unpriced_events"]) for r in rows] == [
        ("acme-ai", "x1", "no price for acme-ai/x1", 2),
        ("openai", "gpt-4o", "stream cut before usage", 1),
    ]


def test_run_tree_three_levels(ledger: LedgerStore) -> None:
    ledger.write(
        [
            event(run_id="root", root_run_id="root", agent="orchestrator", cost=D("0.1")),
            event(
                run_id="research", parent_run_id="root", root_run_id="root", agent="researcher", cost=D("0.2")
            ),
            event(
                run_id="search-1",
                parent_run_id="research",
                root_run_id="root",
                cost=D("0.000000018750000000"),
            ),
            event(run_id="search-2", parent_run_id="research", root_run_id="root", priced=False),
            event(run_id="write", parent_run_id="root", root_run_id="root", cost=D("0.4")),
            event(run_id="write", parent_run_id="root", root_run_id="root", cost=D("0.4")),
            event(run_id="other-root", cost=D("100")),
        ]
    )
    tree = Reports(ledger).run_tree("root")
    assert (tree["cost"], tree["total_cost"], tree["total_events"], tree["total_unpriced_events"]) == (
        "0.1",
        "1.10000001875",
        6,
        1,
    )
    kids = {c["run_id"]: c for c in tree["children"]}
    assert set(kids) == {"research", "write"}
    assert (kids["research"]["cost"], kids["research"]["total_cost"]) == ("0.2", "0.20000001875")
    assert (kids["write"]["events"], kids["write"]["total_cost"]) == (2, "0.8")
    leaves = {c["run_id"]: c for c in kids["research"]["children"]}
    assert leaves["search-2"]["cost"] is None
    assert leaves["search-2"]["unpriced_events"] == 1
    sub = Reports(ledger).run_tree("research")
    assert (sub["total_cost"], len(sub["children"])) == ("0.20000001875", 2)


def test_run_tree_infers_a_parent_that_recorded_nothing(ledger: LedgerStore) -> None:
    # "plan" made no billable call itself; only its children did.
    ledger.write(
        [
            event(run_id="tool-a", parent_run_id="plan", root_run_id="job", cost=D("1")),
            event(run_id="tool-b", parent_run_id="plan", root_run_id="job", cost=D("2")),
        ]
    )
    tree = Reports(ledger).run_tree("job")
    assert (tree["inferred"], tree["total_cost"]) == (True, "3")
    (plan,) = tree["children"]
    assert (plan["run_id"], plan["inferred"], plan["cost"], plan["total_cost"]) == ("plan", True, None, "3")
    with pytest.raises(InvalidInput, match="run_id: no events recorded for run 'nope'"):
        Reports(ledger).run_tree("nope")


def test_the_tree_of_a_run_that_recorded_nothing_reaches_its_deepest_runs(ledger: LedgerStore) -> None:
    # job -> orchestrator -> planner -> {search, write}: only the leaves made billable calls. Their
    # run_path links the silent runs, so each has its tree, every node under its own parent.
    def leaf(run_id: str, cost: str) -> CostEvent:
        path = ("job", "orchestrator", "planner")
        return event(run_id=run_id, parent_run_id="planner", root_run_id="job", run_path=path, cost=D(cost))

    ledger.write([leaf("search", "1"), leaf("write", "2")])
    reports = Reports(ledger)
    orchestrator = reports.run_tree("orchestrator")
    assert orchestrator["inferred"] is True
    assert (orchestrator["total_cost"], orchestrator["total_events"]) == ("3", 2)
    (planner,) = orchestrator["children"]
    assert (planner["run_id"], planner["inferred"], planner["cost"]) == ("planner", True, None)
    assert [c["run_id"] for c in planner["children"]] == ["search", "write"]
    (top,) = reports.run_tree("job")["children"]
    assert top["run_id"] == "orchestrator"  # not hung under the root as a guess


def test_concentration(ledger: LedgerStore) -> None:
    costs = [D(c) for c in ("40", "10", "8", "6", "5", "4", "3", "2", "1", "0.5", "0.25", "0.25")]
    ledger.write([event(tenant_id=f"t{i:02}", cost=c) for i, c in enumerate(costs)])
    ledger.write([event(tenant_id="t-unknown", priced=False), event(tenant_id=None, cost=D("7"))])
    result = Reports(ledger).concentration(*WEEK)
    total = sum(costs, D(0))  # 80
    assert (result["tenants"], result["priced_tenants"], result["total_cost"]) == (13, 12, money_str(total))
    assert (result["top_1_share"], result["top_5_share"], result["top_10_share"]) == (
        "0.500000",
        "0.862500",
        "0.993750",
    )
    assert result["median_cost"] == "3.5"  # (4 + 3) / 2
    assert (result["unattributed_cost"], result["unpriced_events"]) == ("7", 1)
    top = result["rows"][0]
    assert (top["rank"], top["tenant"], top["share"], top["vs_median"]) == (1, "t00", "0.500000", "11.428571")
    unknown = result["rows"][-1]
    assert (unknown["tenant"], unknown["cost"], unknown["share"], unknown["rank"]) == (
        "t-unknown",
        None,
        None,
        None,
    )


def test_concentration_of_an_empty_window(ledger: LedgerStore) -> None:
    result = Reports(ledger).concentration(*WEEK)
    assert (result["unattributed_cost"], result["unattributed_events"]) == ("0", 0)  # known: none
    assert (result["tenants"], result["total_cost"], result["top_1_share"], result["median_cost"]) == (
        0,
        "0",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.breakdown("tenant,colour", *WEEK), "by: unknown group-by key 'colour'"),
        (lambda r: r.breakdown("", *WEEK), "by: give one or more"),
        (lambda r: r.breakdown("tenant,tenant", *WEEK), "by: repeated group-by key"),
        (lambda r: r.tenants("2026-13-01", "2026-14-01"), "start: not an ISO date"),
        (lambda r: r.tenants("2026-03-02", "2026-03-02"), "end: must be after start"),
        (lambda r: r.tenants(date(2026, 3, 2), datetime(2026, 3, 1, tzinfo=UTC)), "end: must be after start"),
        (lambda r: r.tenants(*WEEK, environment="prod"), "environment: must be one of"),
        (lambda r: r.unpriced(None, "2026-03-01"), "start: expected a date"),
        # "" is how the ledger stores "no tenant": asking for tenant "" is not asking for those
        (lambda r: r.breakdown("model", *WEEK, tenant=""), "tenant: must be a non-empty"),
        (lambda r: r.unpriced(*WEEK, tenant=""), "tenant: must be a non-empty"),
        (lambda r: r.totals("model", *WEEK, tenant="a\x00b"), "tenant: must be a non-empty"),
    ],
)
def test_bad_input_is_refused_with_the_field(ledger: LedgerStore, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=message):
        call(Reports(ledger))


def test_renderings(ledger: LedgerStore) -> None:
    ledger.write([event(tenant_id="a", cost=D("0.000000018750000000")), unpriced(tenant_id="b")])
    rows = Reports(ledger).tenants(*WEEK)
    assert '"cost": "0.00000001875"' in render_json(rows)
    assert '"cost": null' in render_json(rows)
    csv_text = render_csv(rows).splitlines()
    assert csv_text[0].startswith("tenant,events,cost,unpriced_events")
    assert csv_text[1].startswith("a,1,0.00000001875,0")
    assert csv_text[2].startswith("b,1,,1")
    assert render_csv([]) == ""


def test_a_name_that_looks_like_a_formula_is_text_in_a_spreadsheet(ledger: LedgerStore) -> None:
    ledger.write([event(tenant_id="acme", feature="=cmd|' /C calc'!A0", cost=D("0.5"))])
    rows = Reports(ledger).breakdown("tenant,feature", *WEEK)
    line = render_csv(rows).splitlines()[1]
    assert line.startswith("acme,'=cmd|' /C calc'!A0,1,0.5,")


@given(st.one_of(st.none(), st.text(max_size=30), st.decimals(allow_nan=False, allow_infinity=False)))
def test_csv_cells_never_start_a_formula_and_read_back_exactly(value: object) -> None:
    cell = csv_cell(value)
    assert csv_value(cell) == ("" if value is None else str(value))
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        Decimal(cell)  # only a number may start so (a negative amount, a delta)


def test_naive_datetimes_are_utc(ledger: LedgerStore) -> None:
    ledger.write([event(time=datetime(2026, 3, 16, 23, 30, tzinfo=UTC), cost=Decimal(1))])
    assert Reports(ledger).tenants(datetime(2026, 3, 16, 23), datetime(2026, 3, 17))[0]["cost"] == "1"
    assert Reports(ledger).tenants("2026-03-17T00:00:00+01:00", "2026-03-17T00:00:00Z")[0]["cost"] == "1"
