"""The conformance suite every :class:`~outlay.ledger.LedgerStore` must pass.

A backend's test module subclasses :class:`LedgerStoreConformance` and provides a ``make_ledger``
fixture returning a factory of fresh, empty ledgers (``tests/ledger/conftest.py`` provides one for
the in-memory and SQLite ledgers; a PostgreSQL ledger plugs in the same way).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidInput
from outlay._money import money_str, money_sum
from outlay._rating import Rating
from outlay._usage import Usage
from outlay.events import CostEvent
from outlay.ledger import GROUP_KEYS, SEVERAL_TENANTS, InMemoryLedger, LedgerStore, RunTotals, Totals

from .conftest import AWKWARD_PRICES, T0, awkward_events, event, unpriced

LedgerFactory = Callable[[], LedgerStore]
D = Decimal
DAY0, DAY_END = date(2026, 1, 1), date(2027, 1, 1)


def by_key(
    totals: Iterable[Totals],
) -> dict[tuple[str | None, ...], tuple[int, int, Decimal | None, int, int]]:
    return {t.key: (t.events, t.unpriced_events, t.cost, t.input_tokens, t.output_tokens) for t in totals}


def recompute(
    events: Sequence[CostEvent], by: Sequence[str], adjusted: dict[str, Decimal] | None = None
) -> dict[tuple[str | None, ...], tuple[int, int, Decimal | None, int, int]]:
    """Totals computed the slow, obvious way from distinct events (first occurrence wins)."""
    adjusted = adjusted or {}
    seen: dict[str, CostEvent] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    groups: dict[tuple[str | None, ...], list[CostEvent]] = defaultdict(list)
    for e in seen.values():
        values = {
            "tenant": e.tenant_id,
            "day": e.time.astimezone(UTC).date().isoformat(),
            "feature": e.feature,
            "agent": e.agent,
            "model": e.model,
            "provider": e.provider,
            "operation": e.operation,
            "environment": e.environment,
            "origin": e.origin if e.tenant_id is None else None,
        }
        groups[tuple(values[name] for name in by)].append(e)
    out = {}
    for key, members in groups.items():
        costs = [adjusted.get(e.event_id, e.cost) for e in members if e.priced or e.event_id in adjusted]
        unpriced_count = sum(1 for e in members if not e.priced and e.event_id not in adjusted)
        out[key] = (
            len(members),
            unpriced_count,
            money_sum(c for c in costs if c is not None) if costs else None,
            sum(e.usage.input_tokens for e in members),
            sum(e.usage.output_tokens for e in members),
        )
    return out


def grand_total(ledger: LedgerStore) -> Totals | None:
    rows = ledger.rollup_totals([], DAY0, DAY_END)
    return rows[0] if rows else None


_event_strategy = st.builds(
    lambda tenant, day, minute, feature, model, env, price, tokens, priced, origin: event(
        tenant_id=tenant,
        origin=origin if tenant is None else None,
        time=datetime(2026, 3, 10, tzinfo=UTC) + timedelta(days=day, minutes=minute),
        feature=feature,
        model=model,
        environment=env,
        cost=price * tokens,
        priced=priced,
        usage=Usage(input_tokens=tokens),
    ),
    tenant=st.sampled_from(["acme", "globex", None]),
    day=st.integers(0, 3),
    minute=st.integers(0, 24 * 60 - 1),
    feature=st.sampled_from(["search", "chat", None]),
    model=st.sampled_from(["gpt-4o", "o3"]),
    env=st.sampled_from(["production", "staging"]),
    price=st.sampled_from(AWKWARD_PRICES),
    tokens=st.integers(0, 10**7),
    priced=st.booleans(),
    origin=st.sampled_from(["nightly-job", "ingest-service", None]),
)


class LedgerStoreConformance:
    # --- idempotency ---------------------------------------------------------------------------

    def test_writing_the_same_batch_twice_changes_no_total(self, ledger: LedgerStore) -> None:
        events = awkward_events(50)
        first = ledger.write(events)
        assert (first.inserted, first.duplicates) == (50, 0)
        before = grand_total(ledger)
        again = ledger.write(events)
        assert (again.inserted, again.duplicates) == (0, 50)
        assert grand_total(ledger) == before
        assert ledger.event_count() == 50

    def test_duplicates_inside_one_batch_count_once(self, ledger: LedgerStore) -> None:
        e = event(cost=D("1.10"))
        result = ledger.write([e, e, e])
        assert (result.inserted, result.duplicates) == (1, 2)
        assert ledger.rollup_totals(["tenant"], DAY0, DAY_END)[0].cost == D("1.10")

    def test_a_batch_mixing_known_and_new_events_adds_only_the_new_ones(self, ledger: LedgerStore) -> None:
        # The writer's redelivery case: part of a batch was written before a crash, the rest was not.
        # Rollups, month totals and run totals must count each event once.
        known = [
            event(cost=D("1.5"), run_id="run-a", time=T0),
            event(cost=D("0.25"), run_id="run-b", time=T0),
        ]
        ledger.write(known)
        new = [
            event(cost=D("2"), run_id="run-a", time=T0 + timedelta(days=1)),
            event(cost=D("0.125"), run_id="run-c", time=T0 + timedelta(days=40)),
            unpriced(run_id="run-a", time=T0 + timedelta(hours=1)),
        ]
        result = ledger.write([known[1], new[0], known[0], new[1], new[2]])
        assert (result.inserted, result.duplicates) == (3, 2)
        total = grand_total(ledger)
        assert total is not None
        assert (total.events, total.unpriced_events, total.cost) == (5, 1, D("3.875"))
        by_day = {t.key[0]: t.cost for t in ledger.rollup_totals(["day"], DAY0, DAY_END)}
        assert sum(by_day.values()) == D("3.875") and len(by_day) == 3
        runs = {r.run_id: (r.events, r.cost) for r in ledger.runs(run_ids=["run-a", "run-b", "run-c"])}
        assert runs == {"run-a": (3, D("3.5")), "run-b": (1, D("0.25")), "run-c": (1, D("0.125"))}

    def test_first_write_of_an_id_wins(self, ledger: LedgerStore) -> None:
        first = event(cost=D("1"))
        ledger.write([first])
        impostor = event(event_id=first.event_id, cost=D("999"))
        assert ledger.write([impostor]).duplicates == 1
        assert ledger.rollup_totals([], DAY0, DAY_END)[0].cost == D("1")

    def test_empty_write_is_a_no_op(self, ledger: LedgerStore) -> None:
        assert (ledger.write([]).inserted, ledger.event_count()) == (0, 0)
        assert ledger.rollup_totals(["tenant"], DAY0, DAY_END) == []

    # --- exact money ---------------------------------------------------------------------------

    def test_totals_are_exact_to_the_last_digit(self, ledger: LedgerStore) -> None:
        events = awkward_events(400)
        for start in range(0, 400, 37):
            ledger.write(events[start : start + 37])
        expected = money_sum(e.cost for e in events if e.cost is not None)
        assert len(money_str(expected).split(".")[1]) >= 24  # the sum really carries 24+ decimals
        total = grand_total(ledger)
        assert total is not None
        assert total.cost == expected
        assert money_str(total.cost) == money_str(expected)
        assert by_key(ledger.rollup_totals(["tenant", "model"], DAY0, DAY_END)) == recompute(
            events, ["tenant", "model"]
        )

    def test_unpriced_is_never_counted_as_zero(self, ledger: LedgerStore) -> None:
        ledger.write([unpriced(tenant_id="t1"), unpriced(tenant_id="t1"), event(tenant_id="t2", cost=D("0"))])
        rows = {t.key[0]: t for t in ledger.rollup_totals(["tenant"], DAY0, DAY_END)}
        assert rows["t1"].cost is None  # unknown, not 0
        assert (rows["t1"].events, rows["t1"].unpriced_events, rows["t1"].priced_events) == (2, 2, 0)
        assert rows["t2"].cost == D("0")  # a free call is a known zero
        ledger.write([event(tenant_id="t1", cost=D("0.5"))])
        rows = {t.key[0]: t for t in ledger.rollup_totals(["tenant"], DAY0, DAY_END)}
        assert (rows["t1"].cost, rows["t1"].unpriced_events) == (D("0.5"), 2)

    def test_non_usd_batch_is_refused_whole(self, ledger: LedgerStore) -> None:
        with pytest.raises(InvalidInput, match=r"events\[1\]\.currency"):
            ledger.write([event(), event(currency="EUR")])
        assert ledger.event_count() == 0

    def test_payloads_must_match_events(self, ledger: LedgerStore) -> None:
        with pytest.raises(InvalidInput, match="payloads"):
            ledger.write([event()], [b"{}", b"{}"])

    # --- rollups ---------------------------------------------------------------------------------

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(events=st.lists(_event_strategy, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
    def test_rollups_equal_a_recomputation_from_raw_events(
        self, make_ledger: LedgerFactory, events: list[CostEvent], cuts: list[int]
    ) -> None:
        ledger = make_ledger()
        bounds = sorted({0, len(events), *(c for c in cuts if c <= len(events))})
        for lo, hi in itertools.pairwise(bounds):
            ledger.write(events[lo:hi])
        ledger.write(events[: len(events) // 2])  # a replay of the first half
        for by in (list(GROUP_KEYS), ["tenant"], ["day", "environment"], ["origin"]):
            expected = recompute(events, by)
            assert by_key(ledger.rollup_totals(by, DAY0, DAY_END)) == expected
            assert (
                by_key(ledger.event_totals(by, T0 - timedelta(days=30), T0 + timedelta(days=30))) == expected
            )

    def test_rollups_cover_only_the_days_asked(self, ledger: LedgerStore) -> None:
        events = [
            event(time=datetime(2026, 3, d, 23, 59, 59, 999999, tzinfo=UTC), cost=D(d)) for d in (1, 2, 3)
        ]
        ledger.write(events)
        rows = ledger.rollup_totals(["day"], date(2026, 3, 2), date(2026, 3, 3))
        assert [(t.key, t.cost) for t in rows] == [(("2026-03-02",), D(2))]
        instant = datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=UTC)
        assert ledger.event_totals([], instant, instant + timedelta(microseconds=1))[0].cost == D(2)
        assert ledger.event_totals([], instant - timedelta(hours=1), instant) == []

    def test_filters(self, ledger: LedgerStore) -> None:
        ledger.write(
            [
                event(tenant_id="a", environment="production", cost=D(1)),
                event(tenant_id="a", environment="staging", cost=D(2)),
                event(tenant_id="b", environment="production", cost=D(4)),
                event(tenant_id=None, origin="cron", cost=D(8)),
            ]
        )
        assert ledger.rollup_totals([], DAY0, DAY_END, environment="production")[0].cost == D(13)
        assert ledger.rollup_totals([], DAY0, DAY_END, tenant="a")[0].cost == D(3)
        only = ledger.rollup_totals(["origin"], DAY0, DAY_END, unattributed=True)
        assert [(t.key, t.cost) for t in only] == [(("cron",), D(8))]
        assert ledger.event_totals(["tenant"], T0, T0 + timedelta(1), tenant="b")[0].cost == D(4)

    def test_unknown_group_key_is_refused(self, ledger: LedgerStore) -> None:
        with pytest.raises(InvalidInput, match="unknown group-by key 'colour'"):
            ledger.rollup_totals(["tenant", "colour"], DAY0, DAY_END)
        with pytest.raises(InvalidInput, match="by"):
            ledger.rollup_totals(["reason"], DAY0, DAY_END)  # not in rollups, only in event_totals

    def test_unpriced_only_groups_by_reason(self, ledger: LedgerStore) -> None:
        ledger.write(
            [
                unpriced(model="m1", unpriced_reason="no price for m1"),
                unpriced(model="m1", unpriced_reason="no price for m1"),
                unpriced(model="m2", unpriced_reason="stream cut"),
                event(model="m1"),
            ]
        )
        rows = ledger.event_totals(["model", "reason"], T0, T0 + timedelta(1), unpriced_only=True)
        assert sorted((t.key, t.unpriced_events, t.cost) for t in rows) == [
            (("m1", "no price for m1"), 2, None),
            (("m2", "stream cut"), 1, None),
        ]

    # --- runs ----------------------------------------------------------------------------------

    def test_runs_keep_own_totals_and_links(self, ledger: LedgerStore) -> None:
        ledger.write(
            [
                event(run_id="root", cost=D("1"), agent="planner"),
                event(run_id="child", parent_run_id="root", root_run_id="root", cost=D("2")),
                event(run_id="child", parent_run_id="root", root_run_id="root", priced=False),
                event(run_id="leaf", parent_run_id="child", root_run_id="root", cost=D("4")),
            ]
        )
        runs = {r.run_id: r for r in ledger.runs(run_ids=["root"], root_run_id="root")}
        assert set(runs) == {"root", "child", "leaf"}
        assert (runs["child"].events, runs["child"].unpriced_events, runs["child"].cost) == (2, 1, D(2))
        assert runs["root"].agent == "planner"
        assert [r.run_id for r in ledger.runs(parent_run_ids=["child"])] == ["leaf"]
        assert ledger.runs() == []

    def test_runs_that_recorded_nothing_are_linked_through_run_path(self, ledger: LedgerStore) -> None:
        """job -> orchestrator -> planner -> leaf where only the leaf records: its run_path makes
        the three others runs with no events, each under its parent, so any of them has a tree."""
        path = ("job", "orchestrator", "planner")
        leaf = {"parent_run_id": "planner", "root_run_id": "job", "run_path": path}
        ledger.write([event(run_id="leaf", cost=D("2"), **leaf), event(run_id="leaf", cost=D("3"), **leaf)])
        runs = {r.run_id: r for r in ledger.runs(root_run_id="job", run_ids=["job"])}
        assert {k: (r.parent_run_id, r.events, r.cost, r.tenant_id) for k, r in runs.items()} == {
            "job": (None, 0, None, None),
            "orchestrator": ("job", 0, None, None),
            "planner": ("orchestrator", 0, None, None),
            "leaf": ("planner", 2, D("5"), "acme"),
        }
        assert [r.run_id for r in ledger.runs(parent_run_ids=["orchestrator"])] == ["planner"]
        # The planner records later (another batch), then a second tenant's child joins it: the
        # planner takes its own first events' tenant, and a link changes no tenant or total.
        ledger.write([event(run_id="planner", parent_run_id="orchestrator", root_run_id="job",
                            run_path=path[:2], cost=D("1"), agent="planner")])  # fmt: skip
        ledger.write([event(tenant_id="globex", run_id="other", parent_run_id="planner", root_run_id="job",
                            run_path=path, cost=D("7"))])  # fmt: skip
        runs = {r.run_id: r for r in ledger.runs(run_ids=["planner", "orchestrator", "other"])}
        assert (runs["planner"].events, runs["planner"].cost, runs["planner"].tenant_id) == (1, D(1), "acme")
        assert runs["planner"].agent == "planner"
        assert (runs["orchestrator"].events, runs["orchestrator"].tenant_id) == (0, None)
        assert (runs["other"].parent_run_id, runs["other"].tenant_id) == ("planner", "globex")
        # In one batch: a link first, then the run's own events.
        ledger.write([event(run_id="b-leaf", parent_run_id="b-mid", root_run_id="b", run_path=("b", "b-mid")),
                      event(tenant_id="globex", run_id="b-mid", parent_run_id="b", root_run_id="b",
                            run_path=("b",), cost=D("1"))])  # fmt: skip
        [mid] = ledger.runs(run_ids=["b-mid"])
        assert (mid.parent_run_id, mid.events, mid.tenant_id) == ("b", 1, "globex")
        # A run_path naming another tenant's root run cannot graft it under the sender's run, in
        # another batch or in the same one.
        ledger.write([event(tenant_id="globex", run_id="forged", parent_run_id="job", root_run_id="x",
                            run_path=("x", "job"), cost=D("1"))])  # fmt: skip
        ledger.write([event(tenant_id="acme", run_id="own", cost=D("1")),
                      event(tenant_id="globex", run_id="forged-2", parent_run_id="own", root_run_id="y",
                            run_path=("y", "own"), cost=D("1"))])  # fmt: skip
        runs = {r.run_id: r for r in ledger.runs(run_ids=["job", "own"])}
        assert (runs["job"].parent_run_id, runs["job"].root_run_id) == (None, "job")
        assert (runs["own"].parent_run_id, runs["own"].root_run_id) == (None, None)

    def test_a_runs_agent_and_links_come_from_its_first_event(self, ledger: LedgerStore) -> None:
        """A run whose events in one batch disagree (a planner run that also logged a call as its
        critic): every ledger keeps the first event's agent, parent and root, as the run tree shows."""
        ledger.write(
            [
                event(run_id="r", agent="planner", parent_run_id="p2", root_run_id="root-b", cost=D("1")),
                event(run_id="r", agent="critic", parent_run_id="p1", root_run_id="root-a", cost=D("2")),
            ]
        )
        [run] = ledger.runs(run_ids=["r"])
        assert (run.agent, run.parent_run_id, run.root_run_id, run.cost) == ("planner", "p2", "root-b", D(3))

    @pytest.mark.parametrize("seed", range(6))
    def test_run_trees_equal_the_in_memory_ledgers_for_any_batches(
        self, make_ledger: LedgerFactory, seed: int
    ) -> None:
        """Runs of events that disagree on their links, agents and tenants, with run paths, written
        in random batches: every ledger keeps the same runs as the reference in-memory one."""
        rng = random.Random(seed)
        names = [f"r{i}" for i in range(6)]
        events = []
        for i in range(14):
            run_id = rng.choice(names)
            others = [n for n in names if n != run_id]
            fields: dict[str, object] = {
                "time": T0 + timedelta(seconds=rng.randint(0, 99)),
                "run_id": run_id,
                "agent": rng.choice([None, "critic", "planner"]),
                "tenant_id": rng.choice(["acme", "globex", None]),
                "cost": D(i),
                "parent_run_id": rng.choice([None, *others]),
                "root_run_id": rng.choice([None, *names]),
            }
            if fields["tenant_id"] is None:
                fields["origin"] = "job"
            if fields["parent_run_id"] is not None and rng.random() < 0.5:
                ancestors = [n for n in others if n != fields["parent_run_id"]]
                fields["run_path"] = (*rng.sample(ancestors, rng.randint(0, 2)), fields["parent_run_id"])
            events.append(event(**fields) if i % 5 else unpriced(**{**fields, "cost": None}))
        cuts = sorted(rng.sample(range(1, len(events)), 3))
        batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
        ledger, reference = make_ledger(), InMemoryLedger()
        for batch in batches:
            ledger.write(batch)
            reference.write(batch)

        def key(run: RunTotals) -> str:
            return run.run_id

        assert sorted(ledger.runs(run_ids=names), key=key) == sorted(reference.runs(run_ids=names), key=key)

    def test_a_run_with_events_of_several_tenants_belongs_to_none(self, ledger: LedgerStore) -> None:
        """Run ids are global: a batch job over many tenants, or one id two tenants both used. Its
        totals mix tenants, so it is no tenant's (isolation), in one batch or across batches."""
        ledger.write([event(tenant_id="globex", run_id="nightly-1", cost=D("0.01"))])
        ledger.write(
            [
                event(tenant_id="acme", run_id="nightly-1", cost=D("42")),
                event(tenant_id="acme", run_id="acme-only", cost=D("1")),
                event(tenant_id="acme", run_id="mixed-in-batch", cost=D("1")),
                unpriced(tenant_id=None, attribution="unattributed", origin="job", run_id="mixed-in-batch"),
            ]
        )
        ledger.write([event(tenant_id="acme", run_id="acme-only", cost=D("2"))])
        runs = {r.run_id: r for r in ledger.runs(run_ids=["nightly-1", "acme-only", "mixed-in-batch"])}
        assert runs["nightly-1"].tenant_id == SEVERAL_TENANTS and runs["nightly-1"].cost == D("42.01")
        assert runs["mixed-in-batch"].tenant_id == SEVERAL_TENANTS
        assert (runs["acme-only"].tenant_id, runs["acme-only"].cost) == ("acme", D("3"))
        [adjusted] = [e for e in ledger.entries(T0, T0 + timedelta(1)) if e.event.run_id == "acme-only"][:1]
        ledger.append_adjustments(
            [(adjusted.event.event_id, Rating(cost=D("5"), priced=True, price_version="v2"))]
        )
        [again] = ledger.runs(run_ids=["acme-only"])
        assert (again.tenant_id, again.cost) == ("acme", D("7"))  # an adjustment is no other tenant

    # --- adjustments -----------------------------------------------------------------------------

    def test_adjustments_change_totals_not_events(self, ledger: LedgerStore) -> None:
        priced, missing = event(cost=D("1.000000000000000001"), run_id="r"), unpriced(run_id="r")
        ledger.write([priced, missing])
        appended = ledger.append_adjustments(
            [
                (priced.event_id, Rating(cost=D("0.75"), priced=True, price_version="v2")),
                (missing.event_id, Rating(cost=D("0.000000018750000000"), priced=True, price_version="v2")),
            ]
        )
        assert [(a.previous_cost, a.delta, a.cost) for a in appended] == [
            (D("1.000000000000000001"), D("-0.250000000000000001"), D("0.75")),
            (None, D("0.00000001875"), D("0.00000001875")),
        ]
        total = grand_total(ledger)
        assert total is not None
        assert (total.cost, total.unpriced_events) == (D("0.75000001875"), 0)
        assert ledger.runs(run_ids=["r"])[0].cost == D("0.75000001875")
        entries = {e.event.event_id: e for e in ledger.entries(T0, T0 + timedelta(1))}
        assert entries[priced.event_id].event.cost == D("1.000000000000000001")  # original row untouched
        assert (entries[priced.event_id].cost, entries[priced.event_id].price_version) == (D("0.75"), "v2")
        assert entries[missing.event_id].priced
        assert entries[missing.event_id].adjustments == 1
        assert ledger.event_totals(["tenant"], T0, T0 + timedelta(1))[0].cost == D("0.75000001875")
        assert [a.adjustment_id for a in ledger.adjustments(priced.event_id)] == [appended[0].adjustment_id]

    def test_same_rating_again_appends_nothing(self, ledger: LedgerStore) -> None:
        e = unpriced()
        ledger.write([e])
        rating = Rating(cost=D("0.3"), priced=True, price_version="v2")
        assert len(ledger.append_adjustments([(e.event_id, rating), (e.event_id, rating)])) == 1
        assert ledger.append_adjustments([(e.event_id, rating)]) == []
        same_cost_new_version = Rating(cost=D("0.30"), priced=True, price_version="v3")
        assert ledger.append_adjustments([(e.event_id, same_cost_new_version)]) == []
        assert len(ledger.adjustments()) == 1

    def test_unpriced_rating_never_erases_a_known_cost(self, ledger: LedgerStore) -> None:
        e = event(cost=D("2"))
        ledger.write([e])
        gone = Rating(cost=None, priced=False, price_version="v2", reason="model removed")
        assert ledger.append_adjustments([(e.event_id, gone)]) == []
        assert grand_total(ledger) == Totals((), 1, 0, D("2"), 0, 0, 0, 0, 0)

    def test_adjusting_an_unknown_event_is_refused_whole(self, ledger: LedgerStore) -> None:
        e = unpriced()
        ledger.write([e])
        rating = Rating(cost=D("1"), priced=True, price_version="v2")
        with pytest.raises(InvalidInput, match="event_id"):
            ledger.append_adjustments(
                [(e.event_id, rating), ("0190d5c0-0000-7000-8000-000000000000", rating)]
            )
        assert ledger.adjustments() == []
        with pytest.raises(InvalidInput, match="currency"):
            ledger.append_adjustments(
                [(e.event_id, Rating(cost=D(1), priced=True, price_version="x", currency="EUR"))]
            )

    # --- rejects, entries ------------------------------------------------------------------------

    def test_rejects_are_kept_once_and_never_counted(self, ledger: LedgerStore) -> None:
        ledger.reject(b"not json", "event: invalid JSON")
        ledger.reject(b"not json", "event: invalid JSON")
        ledger.reject(b'{"x": 1}', "specversion: must be 1.0")
        assert sorted(r.payload for r in ledger.rejected()) == [b"not json", b'{"x": 1}']
        assert ledger.event_count() == 0
        assert len(ledger.rejected(limit=1)) == 1

    def test_entries_are_in_time_order_within_the_window(self, ledger: LedgerStore) -> None:
        events = awkward_events(30, step=timedelta(hours=1))
        shuffled = events[:]
        random.Random(7).shuffle(shuffled)
        ledger.write(shuffled)
        window = [e.event.event_id for e in ledger.entries(events[5].time, events[25].time)]
        assert window == [e.event_id for e in events[5:25]]
        assert [e.event for e in ledger.entries(events[0].time, events[-1].time + timedelta(1))] == events

    def test_entries_page_through_many_events(self, ledger: LedgerStore) -> None:
        events = [event(time=T0) for _ in range(2500)]  # same instant: pages must not skip or repeat
        ledger.write(events)
        ids = [e.event.event_id for e in ledger.entries(T0, T0 + timedelta(seconds=1))]
        assert sorted(ids) == sorted(e.event_id for e in events)

    def test_entries_of_one_tenant_page_through_interleaved_tenants(self, ledger: LedgerStore) -> None:
        # Two tenants interleaved over the same instants, across several pages: one tenant's
        # entries are all of its events, in time order, and nobody else's.
        events = [
            event(time=T0 + timedelta(milliseconds=i // 3), tenant_id="acme" if i % 3 else "globex")
            for i in range(3100)
        ]
        ledger.write(events)
        end = T0 + timedelta(seconds=5)
        acme = list(ledger.entries(T0, end, tenant="acme"))
        assert sorted(e.event.event_id for e in acme) == sorted(
            e.event_id for e in events if e.tenant_id == "acme"
        )
        assert [e.event.time for e in acme] == sorted(e.event.time for e in acme)
        assert {e.event.tenant_id for e in ledger.entries(T0, end, tenant="globex")} == {"globex"}
        assert list(ledger.entries(T0, end, tenant="nobody")) == []
        assert len(list(ledger.entries(T0, end))) == 3100

    def test_entries_of_an_empty_tenant_id_are_refused_not_read_as_the_unattributed(
        self, ledger: LedgerStore
    ) -> None:
        # The SQL stores keep an unattributed event's tenant as '': tenant="" read those there
        # and nothing in memory. It names no tenant: a clear error everywhere.
        ledger.write([event(tenant_id=None), event(tenant_id="acme")])
        end = T0 + timedelta(seconds=1)
        for bad in ("", 5):
            with pytest.raises(InvalidInput, match="tenant"):
                list(ledger.entries(T0, end, tenant=bad))  # type: ignore[arg-type]
        assert [e.event.tenant_id for e in ledger.entries(T0, end, tenant="acme")] == ["acme"]

    def test_entries_by_operation_prefix_page_through_with_a_tenant(self, ledger: LedgerStore) -> None:
        # More matching events than one page, interleaved with near misses ("decisions",
        # "decision;", a different case) and another tenant, several per instant: every page must
        # keep the filter, and no matching event may be skipped or repeated at a page boundary.
        operations = (
            "decision:denied",
            "chat",
            "decision:downgraded",
            "decisions",
            "decision",
            "decision;",
            "Decision:denied",
            "decision:",
        )
        events = [
            event(
                time=T0 + timedelta(milliseconds=i // 4),
                tenant_id="acme" if i % 5 else "globex",
                operation=operations[i % len(operations)],
            )
            for i in range(6000)
        ]
        ledger.write(events)
        end = T0 + timedelta(seconds=5)

        def expect(prefix: str, tenant: str | None) -> list[str]:
            return sorted(
                e.event_id for e in events if e.operation.startswith(prefix) and tenant in (None, e.tenant_id)
            )

        for prefix, tenant in (
            ("decision:", "acme"),
            ("decision:", None),
            ("decision:", "globex"),
            ("decision:down", "acme"),
            ("decision", "acme"),
        ):
            found = list(ledger.entries(T0, end, tenant=tenant, operation_prefix=prefix))
            assert sorted(e.event.event_id for e in found) == expect(prefix, tenant), (prefix, tenant)
            assert [e.event.time for e in found] == sorted(e.event.time for e in found)
        assert len(expect("decision:", "acme")) > 1000  # more than a page of matches
        assert {e.event.operation for e in ledger.entries(T0, end, operation_prefix="decision:")} == {
            "decision:denied",
            "decision:downgraded",
            "decision:",
        }
        # An empty prefix keeps everything, like str.startswith(""); an unknown one keeps nothing.
        assert len(list(ledger.entries(T0, end, tenant="acme", operation_prefix=""))) == 4800
        assert list(ledger.entries(T0, end, tenant="acme", operation_prefix="decision:throttled")) == []

    def test_operation_prefix_has_no_wildcards(self, ledger: LedgerStore) -> None:
        operations = (
            "cost_50%:a",
            "cost_50%",
            "cost_50%%",
            "costX50%:b",  # would match if "_" were a wildcard
            "cost_50X:c",  # would match if "%" were a wildcard
            "cost_5",
            "cost_50&",  # "%" + 1: the first string past the range
            "op\U0010ffff",
            "op\U0010ffffz",
            "oq",  # past "op\U0010ffff...", but must not match it
            "a\ud7ffz",
            "a\ue000",  # the code point after U+D7FF once surrogates are skipped
        )
        events = [event(time=T0 + timedelta(seconds=i), operation=op) for i, op in enumerate(operations)]
        ledger.write(events)
        end = T0 + timedelta(minutes=1)

        def found(prefix: str) -> list[str]:
            return [
                e.event.operation for e in ledger.entries(T0, end, tenant="acme", operation_prefix=prefix)
            ]

        assert found("cost_50%") == ["cost_50%:a", "cost_50%", "cost_50%%"]
        assert found("cost_") == ["cost_50%:a", "cost_50%", "cost_50%%", "cost_50X:c", "cost_5", "cost_50&"]
        assert found("%") == found("_") == []
        assert found("op\U0010ffff") == ["op\U0010ffff", "op\U0010ffffz"]
        assert found("a\ud7ff") == ["a\ud7ffz"]

    # --- concurrency -----------------------------------------------------------------------------

    def test_threads_writing_overlapping_batches_count_each_event_once(self, ledger: LedgerStore) -> None:
        events = awkward_events(600, step=timedelta(seconds=30))
        errors: list[BaseException] = []

        def writer(seed: int) -> None:
            order = events[:]
            random.Random(seed).shuffle(order)
            try:
                for start in range(0, len(order), 50):
                    ledger.write(order[start : start + 50])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert ledger.event_count() == 600
        assert by_key(ledger.rollup_totals(list(GROUP_KEYS), DAY0, DAY_END)) == recompute(
            events, list(GROUP_KEYS)
        )

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        first=st.integers(0, 130),
        length=st.integers(1, 130),
        by=st.sampled_from([[], ["tenant"], ["model", "environment"], ["origin"], ["day"]]),
    )
    def test_any_day_range_equals_the_events_in_it(
        self, make_ledger: LedgerFactory, first: int, length: int, by: list[str]
    ) -> None:
        # Events over four months, some re-rated: however a range is served (days, months, months
        # minus days), it must equal adding up the events themselves.
        ledger = make_ledger()
        events = awkward_events(
            500, start=datetime(2026, 1, 20, tzinfo=UTC), step=timedelta(hours=5, minutes=3)
        )
        ledger.write(events)
        ledger.append_adjustments(
            [
                (e.event_id, Rating(cost=D("0.000000000000000007") * i, priced=True, price_version="v2"))
                for i, e in enumerate(events)
                if i % 5 == 0
            ]
        )
        start = date(2026, 1, 15) + timedelta(days=first)
        end = start + timedelta(days=length)
        from_rollups = ledger.rollup_totals(by, start, end)
        midnight = datetime.combine(start, datetime.min.time(), UTC)
        from_events = ledger.event_totals(by, midnight, midnight + timedelta(days=length))
        assert by_key(from_rollups) == by_key(from_events)

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        start=st.integers(0, 4 * 24 * 60),
        length=st.integers(1, 3 * 24 * 60),
        seconds=st.integers(0, 59),
        by=st.sampled_from(
            [
                [],
                ["tenant"],
                ["day"],
                ["model", "environment"],
                ["origin"],
                ["tenant", "day"],
                list(GROUP_KEYS),
            ]
        ),
        tenant=st.sampled_from([None, "acme"]),
    )
    def test_any_window_with_times_of_day_equals_the_events_in_it(
        self,
        make_ledger: LedgerFactory,
        start: int,
        length: int,
        seconds: int,
        by: list[str],
        tenant: str | None,
    ) -> None:
        # A window to the second, however a ledger serves it (whole hours from hour rollups, the
        # events not rolled up yet and the minutes left from the events, or all from the events),
        # equals adding up the events in it — after duplicates, re-rating (of events rolled up and
        # not) and the pricing of formerly unpriced events.
        ledger = make_ledger()
        base = datetime(2026, 3, 1, tzinfo=UTC)
        events = awkward_events(
            320, start=base + timedelta(minutes=7), step=timedelta(minutes=23, seconds=11)
        )
        ledger.write(events[:200])
        while ledger.maintain():  # background upkeep (SQLite: rolls these up by hour)
            pass
        ledger.write(events[150:])  # an overlap: 50 duplicates, and events not rolled up yet
        adjusted = {
            e.event_id: D("0.000000000000000003") * (i + 1) for i, e in enumerate(events) if i % 6 == 0
        }
        ledger.append_adjustments(
            [
                (event_id, Rating(cost=cost, priced=True, price_version="v2"))
                for event_id, cost in adjusted.items()
            ]
        )
        low = base + timedelta(minutes=start, seconds=seconds)
        high = low + timedelta(minutes=length, seconds=seconds)
        inside = [e for e in events if low <= e.time < high and (tenant is None or e.tenant_id == tenant)]
        got = ledger.event_totals(by, low, high, tenant=tenant)
        assert by_key(got) == recompute(inside, by, adjusted)
