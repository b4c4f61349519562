"""Re-rating appends adjustments (never rewrites events), reports include them, and reruns are no-ops."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT
from outlay._rating import Rating
from outlay.events import CostEvent
from outlay.ledger import LedgerStore, rerate
from outlay.reporting import Reports

from .conformance import grand_total
from .conftest import T0, D, LedgerFactory, awkward_events, event, unpriced

NEW_PRICE = D("0.000000000000000003")  # per input token, 18 decimals


def corrected(e: CostEvent) -> Rating:
    """The corrected catalog: every model priced at NEW_PRICE per input token."""
    return Rating(
        cost=MONEY_CONTEXT.multiply(NEW_PRICE, D(e.usage.input_tokens)), priced=True, price_version="fix-1"
    )


def test_rerate_prices_the_unpriced_and_corrects_the_rest(ledger: LedgerStore) -> None:
    events = awkward_events(70)
    ledger.write(events)
    result = rerate(ledger, corrected, T0.date(), T0.date() + timedelta(days=30))
    expected_total = sum((corrected(e).cost or D(0) for e in events), D(0))
    assert (result.examined, result.adjusted, result.newly_priced) == (70, 70, 10)
    total = grand_total(ledger)
    assert total is not None
    assert (total.cost, total.unpriced_events) == (expected_total, 0)
    old_total = sum((e.cost for e in events if e.cost is not None), D(0))
    assert result.delta == expected_total - old_total
    assert sum(result.by_tenant.values(), D(0)) == result.delta
    assert None in result.by_tenant  # unattributed spend is re-rated too, reported under None
    # The events themselves are untouched: their rows still say what they said.
    for entry in ledger.entries(T0, T0 + timedelta(days=30)):
        assert entry.event in events
        assert entry.cost == corrected(entry.event).cost


def test_rerunning_with_the_same_prices_appends_nothing(ledger: LedgerStore) -> None:
    ledger.write(awkward_events(40))
    first = rerate(ledger, corrected, "2026-03-01", "2026-04-01")
    again = rerate(ledger, corrected, "2026-03-01", "2026-04-01")
    assert first.adjusted == 40
    assert (again.examined, again.adjusted, again.delta, dict(again.by_tenant)) == (40, 0, D(0), {})
    assert len(ledger.adjustments()) == 40


def test_concurrent_reruns_adjust_each_event_once(make_ledger: LedgerFactory) -> None:
    ledger = make_ledger()
    events = awkward_events(300)
    ledger.write(events)
    threads = [
        threading.Thread(
            target=rerate, args=(ledger, corrected, "2026-03-01", "2026-05-01"), kwargs={"batch_size": 7}
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.adjustments()) == 300
    total = grand_total(ledger)
    assert total is not None
    assert total.cost == sum((corrected(e).cost or D(0) for e in events), D(0))


def test_only_the_window_is_rerated(ledger: LedgerStore) -> None:
    inside, before, after = (
        event(time=T0),
        event(time=T0 - timedelta(days=1)),
        event(time=T0 + timedelta(days=1)),
    )
    ledger.write([inside, before, after])
    result = rerate(ledger, corrected, T0, T0 + timedelta(hours=1))
    assert result.examined == 1
    assert [a.event_id for a in ledger.adjustments()] == [inside.event_id]


def test_unknown_prices_never_erase_and_none_means_leave_alone(ledger: LedgerStore) -> None:
    known, missing, tool = event(cost=D("1")), unpriced(), event(provider=None, model=None, operation="tool")
    ledger.write([known, missing, tool])

    def still_unknown(e: CostEvent) -> Rating | None:
        if e.provider is None:
            return None
        return Rating(cost=None, priced=False, price_version="v2", reason="no price")

    result = rerate(ledger, still_unknown, "2026-03-16", "2026-03-17")
    assert (result.adjusted, result.still_unpriced, result.skipped) == (0, 1, 2)
    assert ledger.adjustments() == []


def test_reports_include_adjustments(ledger: LedgerStore) -> None:
    e = unpriced(tenant_id="acme", model="new-model", unpriced_reason="no price for openai/new-model")
    ledger.write([e, event(tenant_id="acme", cost=D("1"))])
    reports = Reports(ledger)
    assert reports.unpriced("2026-03-01", "2026-04-01")[0]["unpriced_events"] == 1
    rerate(
        ledger, lambda ev: Rating(cost=D("0.25"), priced=True, price_version="v2"), "2026-03-01", "2026-04-01"
    )
    assert reports.tenants("2026-03-01", "2026-04-01")[0]["cost"] == "0.5"  # 1 re-rated to 0.25, + 0.25
    rows = reports.breakdown("tenant", T0, T0 + timedelta(minutes=1))  # served from events (partial day)
    assert (rows[0]["cost"], rows[0]["unpriced_events"]) == ("0.5", 0)
    assert reports.unpriced("2026-03-01", "2026-04-01") == []


def test_bad_window_is_refused(ledger: LedgerStore) -> None:
    with pytest.raises(InvalidInput, match="end: must be after start"):
        rerate(ledger, corrected, "2026-03-02", "2026-03-01")
    with pytest.raises(InvalidInput, match="start: not an ISO date"):
        rerate(ledger, corrected, "yesterday", "2026-03-01")


def test_one_event_whose_cost_cannot_be_held_does_not_stop_the_rerating(ledger: LedgerStore) -> None:
    # A quantity and a unit price a ledger each holds (36 places) whose product needs more than 60
    # digits: that event stays unpriced; the others of the window are still re-rated.
    from outlay._usage import Usage
    from outlay.ledger import catalog_rater
    from outlay.pricing import PriceCatalog, parse_overrides

    long_quantity = unpriced(
        provider="self-hosted",
        model="llama-3.1-70b",
        usage=Usage(units={"gpu_seconds": D("0.123456789012345678901234567890123456")}),
    )
    plain = unpriced(
        provider="self-hosted", model="llama-3.1-70b", usage=Usage(units={"gpu_seconds": D("10")})
    )
    # A quantity with more places than a cost can carry (the ledger keeps it, unpriced): this price
    # cannot rate it at all; it is skipped, never the end of the re-rating.
    too_long = unpriced(
        provider="self-hosted", model="llama-3.1-70b", usage=Usage(units={"gpu_seconds": D("0." + "1" * 50)})
    )
    ledger.write([too_long, long_quantity, plain])
    catalog = PriceCatalog(
        parse_overrides(
            b'[[price]]\nprovider = "self-hosted"\nmodel = "llama-3.1-70b"\n'
            b'units = { gpu_seconds = "0.000347222222222222222222222222222222" }\n'
        )
    )
    result = rerate(ledger, catalog_rater(catalog), "2026-03-16", "2026-03-17")
    assert (result.examined, result.adjusted, result.still_unpriced, result.skipped) == (3, 1, 1, 1)
    assert [(a.event_id, a.cost) for a in ledger.adjustments()] == [
        (plain.event_id, D("0.00347222222222222222222222222222222"))
    ]


def test_catalog_rater_leaves_costs_no_catalog_gave_alone(ledger: LedgerStore) -> None:
    # The gateway's known zero for an upstream error, and an ingested event's own price, were not
    # priced by a catalog: re-rating must not bill them at list price (here $5 per 1000 requests).
    from outlay._usage import Usage
    from outlay.gateway._outlay_hooks import NOT_BILLED
    from outlay.ledger import catalog_rater
    from outlay.pricing import PriceCatalog, parse_overrides

    usage = Usage(input_tokens=1_000_000)
    not_billed = event(usage=Usage(), status="error", cost=D(0), price_version=NOT_BILLED)
    contract = event(usage=usage, cost=D("1"), price_version="acme-contract-2026")
    catalogued = event(usage=usage, cost=D("3"), price_version="genai-prices@0.2.2:openai/gpt-4o")
    missing = unpriced(usage=usage, price_version="genai-prices@0.2.3")
    ledger.write([not_billed, contract, catalogued, missing])
    catalog = PriceCatalog(
        parse_overrides(
            b'[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_mtok = "2"\nrequests_kcount = "5"\n'
        )
    )
    result = rerate(ledger, catalog_rater(catalog), "2026-03-16", "2026-03-17")
    assert (result.examined, result.adjusted, result.skipped) == (4, 2, 2)
    assert {a.event_id: a.cost for a in ledger.adjustments()} == {
        catalogued.event_id: D("2.005"),
        missing.event_id: D("2.005"),
    }


def test_a_naive_adjustment_time_is_refused_naming_the_field(ledger: LedgerStore) -> None:
    from datetime import datetime

    e = unpriced()
    ledger.write([e])
    with pytest.raises(InvalidInput) as info:
        rerate(ledger, corrected, "2026-03-16", "2026-03-17", at=datetime(2026, 12, 1))
    assert info.value.field == "at"
    with pytest.raises(InvalidInput) as info:
        ledger.append_adjustments([(e.event_id, corrected(e))], at=datetime(2026, 12, 1))
    assert info.value.field == "at"
    assert ledger.adjustments() == []


def test_rerating_prices_a_call_at_the_tier_that_served_it(ledger: LedgerStore) -> None:
    # Recorded priority calls: one rated at the standard price by an older version, one unpriced
    # (no priority price then). Re-rated with a catalog that has the tier's prices, each is charged
    # at the priority price: the tier survived the event's encoding in the ledger.
    from datetime import UTC, datetime

    from outlay._usage import Usage
    from outlay.ledger import catalog_rater
    from outlay.pricing import PriceCatalog, parse_overrides

    at = datetime(2026, 11, 16, 9, 30, tzinfo=UTC)
    priority = Usage(input_tokens=1_000_000, output_tokens=100_000, service_tier="priority")
    as_standard = event(
        time=at, usage=priority, cost=D("3.5"), price_version="genai-prices@0.2.2:openai/gpt-4o"
    )
    claude = unpriced(
        time=at,
        provider="anthropic",
        model="claude-haiku-4-5",
        usage=priority,
        price_version="genai-prices@0.2.3",
    )
    standard = event(
        time=at, usage=Usage(input_tokens=1_000_000, output_tokens=100_000), cost=D("3.5"),
        price_version="genai-prices@0.2.3:openai/gpt-4o",
    )  # fmt: skip
    ledger.write([as_standard, claude, standard])
    catalog = PriceCatalog(
        parse_overrides(
            b'[[price]]\nprovider = "anthropic"\nmodel = "claude-haiku-4-5"\nservice_tier = "priority"\n'
            b'input_mtok = "1.75"\noutput_mtok = "8.75"\n'
        )
    )
    result = rerate(ledger, catalog_rater(catalog), "2026-11-16", "2026-11-17")
    assert (result.examined, result.adjusted, result.newly_priced) == (3, 2, 1)
    adjustments = {a.event_id: a for a in ledger.adjustments()}
    # gpt-4o priority: 1M x $4.25 + 100k x $17 per million = 4.25 + 1.7
    assert adjustments[as_standard.event_id].cost == D("5.95")
    assert (
        adjustments[as_standard.event_id].price_version
        == "genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority"
    )
    # claude-haiku-4-5 priority (the override): 1.75 + 0.875
    assert adjustments[claude.event_id].cost == D("2.625")
    assert adjustments[claude.event_id].price_version.endswith(":anthropic/claude-haiku-4-5#priority")
    assert standard.event_id not in adjustments  # the standard call's price is unchanged
    [entry] = [e for e in ledger.entries(at, at + timedelta(hours=1)) if e.event.event_id == claude.event_id]
    assert entry.event.usage.service_tier == "priority"
