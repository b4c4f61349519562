"""Spikes against a tenant's own baseline, and runaway runs against the agent's median run."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from outlay._errors import InvalidInput
from outlay.finance import runaway_runs, spikes
from outlay.ledger import InMemoryLedger

from .conftest import D, event

DAY0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _history(ledger: InMemoryLedger) -> None:
    events = []
    for n in range(20):  # acme: a steady 1.00 a day, then 5.00 on day 16; globex: steady 10.00
        events.append(event(time=DAY0 + timedelta(days=n), cost=D("5") if n == 16 else D("1")))
        events.append(event(time=DAY0 + timedelta(days=n), tenant_id="globex", agent="bot", cost=D("10")))
    events.append(event(time=DAY0 + timedelta(days=18), tenant_id="newco", cost=D("0.5")))  # new, but tiny
    events.append(event(time=DAY0 + timedelta(days=18), tenant_id="newco", priced=False))
    ledger.write(events)


def test_spike_against_own_baseline(ledger: InMemoryLedger) -> None:
    _history(ledger)
    found = spikes(ledger, date(2026, 3, 15), date(2026, 3, 21), minimum=D("1"))
    assert [(s.day, s.key, s.cost, s.baseline) for s in found] == [
        (date(2026, 3, 17), "acme", D("5"), D("1"))
    ]
    assert found[0].to_json() == {
        "day": "2026-03-17",
        "tenant": "acme",
        "cost": "5",
        "baseline": "1",
        "unpriced_events": 0,
    }
    # globex spends 10x acme every day: steady, so never a spike; newco is new but under the minimum
    lenient = spikes(ledger, date(2026, 3, 15), date(2026, 3, 21), factor=D(4), minimum=D("0.1"))
    assert {(s.key, s.day) for s in lenient} == {("acme", date(2026, 3, 17)), ("newco", date(2026, 3, 19))}
    by_agent = spikes(ledger, date(2026, 3, 15), date(2026, 3, 21), by="agent", tenant="acme")
    assert [(s.key, s.tenant) for s in by_agent] == [("planner", "acme")]
    assert spikes(ledger, date(2026, 3, 15), date(2026, 3, 21), factor=D(6)) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"by": "model"}, "by"), ({"factor": D("0.5")}, "factor"), ({"minimum": D(-1)}, "minimum"),
     ({"baseline_days": 0}, "days")],
)  # fmt: skip
def test_bad_spike_parameters(ledger: InMemoryLedger, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        spikes(ledger, date(2026, 3, 1), date(2026, 3, 2), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_runaway_run_is_rolled_up_and_compared_with_its_agent(ledger: InMemoryLedger) -> None:
    events = []
    for n in range(6):
        run = f"run-{n}"
        events.append(event(run_id=run, root_run_id=run, cost=D("0.1")))
    # run-x costs 0.1 itself but its children spend 2.00: the rolled-up cost is what matters
    events.append(event(run_id="run-x", root_run_id="run-x", cost=D("0.1")))
    for n in range(4):
        events.append(
            event(run_id=f"c{n}", parent_run_id="run-x", root_run_id="run-x", agent="tool", cost=D("0.5"))
        )
    events.append(event(run_id="run-x", root_run_id="run-x", priced=False))
    events.append(event(run_id="g", root_run_id="g", tenant_id="globex", agent="solo", cost=D("99")))
    ledger.write(events)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    found = runaway_runs(ledger, start, end)
    assert [r.to_json() for r in found] == [
        {"run_id": "run-x", "tenant": "acme", "agent": "planner", "cost": "2.1", "agent_median": "0.1",
         "runs_of_agent": 7, "events": 6, "unpriced_events": 1}
    ]  # fmt: skip
    assert runaway_runs(ledger, start, end, tenant="globex") == []  # one run: no median to speak of
    assert runaway_runs(ledger, start, end, factor=D(30)) == []
    with pytest.raises(InvalidInput) as info:
        runaway_runs(ledger, start, end, min_runs=1)
    assert info.value.field == "min_runs"


def test_windows_given_as_text_are_read_and_bad_ones_are_named(ledger: InMemoryLedger) -> None:
    # The CLI and API speak ISO text: so may a Python caller, with a clear error for anything else.
    assert spikes(ledger, "2026-03-01", "2026-04-01") == []
    assert runaway_runs(ledger, "2026-03-01", "2026-04-01T00:00:00Z") == []
    with pytest.raises(InvalidInput, match="from: expected a date"):
        spikes(ledger, "March", "2026-04-01")
    with pytest.raises(InvalidInput, match="to: "):
        runaway_runs(ledger, "2026-03-01", 20260401)


def test_factor_and_minimum_as_documented_ints_or_strings(ledger: InMemoryLedger) -> None:
    """docs/finance.md writes ``spikes(..., factor=3, minimum=1)``: ints (and decimal strings) are
    read exactly; they used to crash with AttributeError ('int' object has no attribute 'is_finite')."""
    _history(ledger)
    window = (date(2026, 3, 15), date(2026, 3, 21))
    assert spikes(ledger, *window, factor=3, minimum=1) == spikes(ledger, *window, factor=D(3), minimum=D(1))
    assert spikes(ledger, *window, factor="4", minimum="0.1") == spikes(
        ledger, *window, factor=D(4), minimum=D("0.1")
    )
    assert runaway_runs(ledger, DAY0, DAY0 + timedelta(days=20), factor=5, minimum=0) == runaway_runs(
        ledger, DAY0, DAY0 + timedelta(days=20), factor=D(5), minimum=D(0)
    )


@pytest.mark.parametrize("bad", [3.0, True, None, "three", [3]])
def test_factor_of_another_type_is_a_clear_error(ledger: InMemoryLedger, bad: object) -> None:
    for call in (spikes, runaway_runs):
        with pytest.raises(InvalidInput) as info:
            call(ledger, date(2026, 3, 1), date(2026, 3, 2), factor=bad)  # type: ignore[operator]
        assert info.value.field == "factor"


def test_an_unknown_baseline_is_not_zero_so_it_makes_no_spike(ledger: InMemoryLedger) -> None:
    # Fourteen days of usage whose cost is unknown, then a priced day: the baseline is unknown, not 0.
    events = [event(time=DAY0 + timedelta(days=n), priced=False) for n in range(14)]
    events.append(event(time=DAY0 + timedelta(days=14), cost=D("2")))
    ledger.write(events)
    assert spikes(ledger, date(2026, 3, 15), date(2026, 3, 16)) == []


def test_a_spike_over_a_baseline_with_a_few_unknown_days_is_still_found(ledger: InMemoryLedger) -> None:
    events = [event(time=DAY0 + timedelta(days=n), cost=D("0.5")) for n in range(14)]
    events += [event(time=DAY0 + timedelta(days=n), priced=False) for n in (3, 7)]  # two days: unknown
    events.append(event(time=DAY0 + timedelta(days=14), cost=D("2")))
    ledger.write(events)
    assert [(s.day, s.cost, s.baseline) for s in spikes(ledger, date(2026, 3, 15), date(2026, 3, 16))] == [
        (date(2026, 3, 15), D("2"), D("0.5"))
    ]


def test_runs_of_unknown_cost_do_not_lower_the_agent_median(ledger: InMemoryLedger) -> None:
    events = [event(run_id=f"r{n}", root_run_id=f"r{n}", priced=False) for n in range(5)]
    events.append(event(run_id="r9", root_run_id="r9", cost=D("0.5")))
    ledger.write(events)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    assert runaway_runs(ledger, start, end) == []  # the median run costs an unknown amount, not 0


def test_days_under_the_minimum_are_not_given_a_median(
    ledger: InMemoryLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The median of the 14 days before was computed for every group-day, though a day under the
    minimum can never be a spike: with 50,000 tenants the finance dashboard page took a minute."""
    from outlay.finance import _anomalies

    events = [
        event(time=DAY0 + timedelta(days=n), tenant_id=f"t{i}", cost=D("0.01"))
        for i in range(50)
        for n in range(20)
    ]
    events.append(event(time=DAY0 + timedelta(days=16), tenant_id="t7", cost=D("5")))
    ledger.write(events)
    medians: list[int] = []
    real = _anomalies._median

    def counted(values: list[D]) -> D:
        medians.append(len(values))
        return real(values)

    monkeypatch.setattr(_anomalies, "_median", counted)
    found = spikes(ledger, date(2026, 3, 15), date(2026, 3, 21), minimum=D("1"))
    assert [(s.day, s.key, s.cost, s.baseline) for s in found] == [
        (date(2026, 3, 17), "t7", D("5.01"), D("0.01"))
    ]
    assert medians == [14]  # t7's one day over the minimum, not 50 tenants x 6 days
