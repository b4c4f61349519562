"""The recording API end to end on the embedded pipeline: context -> rating -> log -> ledger -> reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import outlay
from outlay import Budget, BudgetEngine, Outlay, Usage, budgets
from outlay._errors import InvalidInput
from outlay.budgets import InMemoryBudgetStore

WINDOW = ("2000-01-01", "2100-01-01")
_WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
CHILD = Path(__file__).with_name("_record_child.py")

CHAT_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "total_tokens": 1300,
        "prompt_tokens_details": {"cached_tokens": 200},
    },
}


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Outlay]:
    instance = Outlay(tmp_path / "home" / "outlay.db")
    yield instance
    instance.close()


def test_an_llm_response_becomes_an_exact_attributed_event_in_the_ledger(pipeline: Outlay) -> None:
    with outlay.attribute(tenant="acme", feature="chat", user="u1"), outlay.run("orchestrator") as run:
        event = pipeline.record_llm(provider="openai", response=CHAT_RESPONSE)
    # gpt-4o: 800 uncached x $2.50/M + 200 cached x $1.25/M + 300 out x $10/M
    assert event.cost == Decimal("0.002") + Decimal("0.00025") + Decimal("0.003")
    assert (event.tenant_id, event.feature, event.user_id, event.run_id) == ("acme", "chat", "u1", run.id)
    assert event.model == "gpt-4o-2024-08-06"
    assert event.price_version and event.price_version.startswith("genai-prices@")
    rows = pipeline.reports().tenants(*WINDOW)
    assert rows == [
        {
            "tenant": "acme", "events": 1, "cost": "0.00525", "unpriced_events": 0, "input_tokens": 1000,
            "cache_read_tokens": 200, "cache_write_tokens": 0, "output_tokens": 300, "reasoning_tokens": 0,
        }
    ]  # fmt: skip


def test_no_tenant_is_recorded_as_unattributed_with_its_origin(pipeline: Outlay) -> None:
    with outlay.run("nightly-reindex", kind="job"):
        event = pipeline.record_usage(
            operation="embedding", provider="openai", model="text-embedding-3-small",
            usage={"input_tokens": 50_000},
        )  # fmt: skip
    assert event.attribution == "unattributed" and event.origin == "nightly-reindex"
    [row] = pipeline.reports().unattributed(*WINDOW)
    assert row["origin"] == "nightly-reindex" and row["cost"] == "0.001"


def _record_without_context(instance: Outlay) -> str | None:
    usage = Usage(input_tokens=10, output_tokens=5)
    return instance.record_llm(provider="openai", model="gpt-4o", usage=usage).origin


def test_spend_outside_any_run_takes_the_service_else_the_program_as_its_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = Outlay(tmp_path / "a.db", service="billing-sync")
    monkeypatch.setenv("OUTLAY_SERVICE", "from-env")
    from_env = Outlay(tmp_path / "b.db")
    monkeypatch.delenv("OUTLAY_SERVICE")
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", ["/srv/jobs/nightly_export.py", "--full"])
    script = Outlay(tmp_path / "c.db")
    monkeypatch.setattr(sys, "argv", ["-c"])
    anonymous = Outlay(tmp_path / "d.db")
    try:
        assert _record_without_context(named) == "billing-sync"
        assert _record_without_context(from_env) == "from-env"
        assert _record_without_context(script) == "nightly_export.py"
        assert _record_without_context(anonymous) == "unknown"  # python -c: no name to give
        [row] = script.reports().unattributed(*WINDOW)
        assert row["origin"] == "nightly_export.py"
    finally:
        for instance in (named, from_env, script, anonymous):
            instance.close()


def test_a_program_whose_file_name_is_not_utf8_or_very_long_still_records_its_spend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAY_SERVICE", raising=False)
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", [os.fsdecode(b"/srv/jobs/caf\xe9.py")])  # a latin-1 file name
    latin1 = Outlay(tmp_path / "a.db")
    monkeypatch.setattr(sys, "argv", ["/srv/" + "j" * 250 + ".py"])
    long = Outlay(tmp_path / "b.db")
    try:
        assert _record_without_context(latin1) == "caf\\xe9.py"
        origin = _record_without_context(long)
        assert origin.startswith("jjj") and len(origin) == 200
        [row] = latin1.reports().unattributed(*WINDOW)
        assert row["events"] == 1
    finally:
        latin1.close()
        long.close()


def test_a_service_no_event_can_carry_is_refused_when_configured(tmp_path: Path) -> None:
    from outlay._errors import ConfigError

    for service in ("a\x00b", "x" * 201, "caf\udce9", " ", 5):
        with pytest.raises(ConfigError, match="service: must be a non-empty printable string"):
            Outlay(tmp_path / "outlay.db", service=service)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="require_tenant: must be True or False, got 'no'"):
        Outlay(tmp_path / "outlay.db", require_tenant="no")  # type: ignore[arg-type]


def test_a_module_run_with_python_m_is_named_by_its_module(tmp_path: Path) -> None:
    package = tmp_path / "jobs" / "reindex"
    package.mkdir(parents=True)
    (tmp_path / "jobs" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\n"
        "from outlay import Outlay, Usage\n"
        "with Outlay(sys.argv[1]) as o:\n"
        "    print(o.record_llm(provider='openai', model='gpt-4o', usage=Usage(input_tokens=1)).origin)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("OUTLAY_SERVICE", None)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.reindex", str(tmp_path / "outlay.db")],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "jobs.reindex"


def test_a_home_named_without_an_extension_is_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OUTLAY_URL=.outlay: the README's default home, written without its slash. It used to become a
    # ledger *file* named .outlay, and the default setup then failed on it (FileExistsError).
    monkeypatch.chdir(tmp_path)
    with Outlay(".outlay") as named:
        named.record_tool("search", 1)
        assert len(named.reports().tenants(*WINDOW)) == 1
    assert (tmp_path / ".outlay").is_dir() and (tmp_path / ".outlay" / "outlay.db").is_file()
    with Outlay() as default:  # the same home, found by the default setup
        assert default.reports().tenants(*WINDOW)[0]["events"] == 1


def test_a_home_that_names_no_ledger_is_refused_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlay._errors import ConfigError

    monkeypatch.chdir(tmp_path)
    for url in ("https://example.com/ledger", "nats://127.0.0.1:4222"):
        with pytest.raises(ConfigError, match="url: unsupported ledger URL"):
            Outlay(url)
    monkeypatch.setenv("OUTLAY_LEDGER_URL", "mysql://db/outlay")
    with pytest.raises(ConfigError, match="OUTLAY_LEDGER_URL: unsupported ledger URL 'mysql://db/outlay'"):
        Outlay()
    monkeypatch.delenv("OUTLAY_LEDGER_URL")
    monkeypatch.setenv("OUTLAY_URL", "https://example.com/ledger")
    with pytest.raises(ConfigError, match="OUTLAY_URL: unsupported ledger URL"):
        Outlay()
    monkeypatch.delenv("OUTLAY_URL")
    for wrong in (b"/srv/outlay", 123):
        with pytest.raises(ConfigError, match="url: expected a path or URL string"):
            Outlay(wrong)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # no ./.outlay/events.db, no directory named "b'"


def test_two_ledgers_in_one_directory_keep_their_own_events(tmp_path: Path) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    with Outlay(tmp_path / "prod.db") as prod, Outlay(tmp_path / "staging.db") as staging:
        with outlay.attribute(tenant="acme"):
            prod.record_llm(provider="openai", model="gpt-4o", usage=usage)
        with outlay.attribute(tenant="initech"):
            staging.record_llm(provider="openai", model="gpt-4o", usage=usage)
            staging.record_llm(provider="openai", model="gpt-4o", usage=usage)
        # staging's writer catches up first: it must not take prod's event from a shared log
        assert [r["tenant"] for r in staging.reports().tenants(*WINDOW)] == ["initech"]
        assert [r["tenant"] for r in prod.reports().tenants(*WINDOW)] == ["acme"]
    assert sorted(p.name for p in tmp_path.glob("*.events.db")) == ["prod.events.db", "staging.events.db"]
    # the command line finds each ledger's log the same way
    from click.testing import CliRunner

    from outlay.cli import main

    with Outlay(tmp_path / "prod.db") as prod:
        with outlay.attribute(tenant="globex"):
            prod.record_llm(provider="openai", model="gpt-4o", usage=usage)
        prod.flush()
        args = ["report", "tenants", "--from", WINDOW[0], "--to", WINDOW[1], "--format", "json"]
        shown = CliRunner().invoke(main, [*args, "--ledger", str(tmp_path / "prod.db")])
        assert shown.exit_code == 0, shown.output
        assert sorted(row["tenant"] for row in json.loads(shown.output)) == ["acme", "globex"]


def test_an_amount_no_ledger_could_total_is_refused_when_recorded(pipeline: Outlay) -> None:
    from outlay._errors import InvalidEvent, InvalidUsage

    with outlay.attribute(tenant="acme"):
        with pytest.raises(InvalidEvent, match="cost: has more than 36 decimal places"):
            pipeline.record_tool("gpu", 1, cost=Decimal(0.1))  # noqa: RUF032 - the mistake under test
        with pytest.raises(InvalidUsage, match="input_tokens: must be at most 10\\^12"):
            pipeline.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=2**62))
        pipeline.record_tool("gpu", 1, cost=Decimal("250000"))
    with outlay.attribute(tenant="other"):
        pipeline.record_tool("gpu", 1, cost=Decimal("1"))
    rows = pipeline.reports().tenants(*WINDOW)  # nothing refused reached the log to block it
    assert [(r["tenant"], r["cost"]) for r in rows] == [("acme", "250000"), ("other", "1")]


def test_labels_with_no_utf8_form_are_refused_naming_the_field(pipeline: Outlay) -> None:
    from outlay._errors import InvalidEvent

    usage = Usage(input_tokens=10)
    with outlay.attribute(tenant="acme"):
        for labels, problem in (
            ({"k": "caf\udce9"}, "has no UTF-8 form"),
            ({"caf\udce9": "v"}, "keys must be"),
        ):
            with pytest.raises(InvalidEvent, match=rf"labels: .*{problem}"):
                pipeline.record_llm(provider="openai", model="gpt-4o", usage=usage, labels=labels)
        pipeline.record_llm(provider="openai", model="gpt-4o", usage=usage, labels={"k": "café"})
    [row] = pipeline.reports().tenants(*WINDOW)
    assert row["events"] == 1


def test_a_ready_made_unattributed_event_is_recorded_with_its_origin(tmp_path: Path) -> None:
    from outlay import CostEvent

    instance = Outlay(tmp_path / "outlay.db", service="billing-sync")
    try:

        def event() -> CostEvent:
            return CostEvent(
                operation="tool",
                attribution="unattributed",
                priced=True,
                cost=Decimal(1),
                price_version="caller",
            )

        assert instance.record(event()).origin == "billing-sync"
        with outlay.run("reindex"):
            assert instance.record(event()).origin == "reindex"
        named = CostEvent(
            operation="tool", attribution="unattributed", origin="mine", priced=True, cost=Decimal(1),
            price_version="caller",
        )  # fmt: skip
        assert instance.record(named).origin == "mine"
        rows = instance.reports().unattributed(*WINDOW)
        assert sorted((row["origin"], row["events"]) for row in rows) == [
            ("billing-sync", 1), ("mine", 1), ("reindex", 1)
        ]  # fmt: skip
    finally:
        instance.close()


def test_one_provider_spelt_several_ways_is_one_row_of_a_breakdown(pipeline: Outlay) -> None:
    usage = Usage(input_tokens=1000)
    with outlay.attribute(tenant="acme"):
        for provider in ("openai", "OpenAI", " openai"):
            assert pipeline.record_llm(provider=provider, model="gpt-4o", usage=usage).provider == "openai"
        body = {"modelVersion": "gemini-1.5-pro", "usageMetadata": {"promptTokenCount": 10}}
        assert pipeline.record_llm(provider="gemini", response=body).provider == "google"
        assert pipeline.record_tool("web-search", 1).provider == "tools"  # not a registry name: as given
    rows = pipeline.reports().breakdown("provider", *WINDOW)
    assert sorted((row["provider"], row["events"]) for row in rows) == [
        ("google", 1),
        ("openai", 3),
        ("tools", 1),
    ]


def test_record_refuses_what_is_not_a_cost_event(pipeline: Outlay) -> None:
    from outlay._errors import InvalidInput

    with pytest.raises(InvalidInput, match="event: expected a CostEvent, got str"):
        pipeline.record("x")  # type: ignore[arg-type]


def test_require_tenant_refuses_unattributed_calls(tmp_path: Path) -> None:
    strict = Outlay(tmp_path / "outlay.db", require_tenant=True)
    try:
        with pytest.raises(outlay.AttributionMissing, match="no tenant"):
            strict.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=1))
    finally:
        strict.close()


def test_require_tenant_refuses_a_metered_call_before_it_is_made(tmp_path: Path) -> None:
    # It was refused only when recorded, after the call: the provider had billed it, the event
    # was lost, and an SDK that retries on errors (anthropic's) made the call again.
    strict = Outlay(tmp_path / "outlay.db", require_tenant=True)
    engine = BudgetEngine(InMemoryBudgetStore())
    made = []
    try:
        with pytest.raises(outlay.AttributionMissing, match="no tenant"):
            with strict.recorder.meter(provider="openai", model="gpt-4o", budgets=engine) as call:
                made.append(call)
        assert made == []
        with (
            outlay.attribute(tenant="acme"),
            strict.recorder.meter(provider="openai", model="gpt-4o", budgets=engine) as call,
        ):
            call.set_usage(Usage(input_tokens=1))
        assert call.event is not None and call.event.tenant_id == "acme"
    finally:
        strict.close()


def test_unknown_model_and_incomplete_usage_are_never_zero(pipeline: Outlay) -> None:
    with outlay.attribute(tenant="acme"):
        unknown = pipeline.record_llm(
            provider="openai", model="ft:my-private-model", usage=Usage(input_tokens=5)
        )
        cut = pipeline.record_llm(
            provider="openai", model="gpt-4o",
            usage=Usage(input_tokens=5, complete=False, reason="stream ended before usage"),
        )  # fmt: skip
    assert unknown.cost is None and not unknown.priced and unknown.unpriced_reason
    assert cut.cost is None and "incomplete" in (cut.unpriced_reason or "")
    [row] = pipeline.reports().tenants(*WINDOW)
    assert row["cost"] is None and row["unpriced_events"] == 2


def test_tool_calls_are_priced_by_custom_units(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nprovider = "tools"\nmodel = "web-search"\nunits = { calls = "0.005" }\n')
    instance = Outlay(tmp_path / "outlay.db", prices=prices)
    try:
        with outlay.attribute(tenant="acme"):
            event = instance.record_tool("web-search", 3)
        assert event.cost == Decimal("0.015")
    finally:
        instance.close()


def test_a_tool_quantity_no_ledger_could_hold_is_refused_naming_the_unit(tmp_path: Path) -> None:
    from outlay._errors import InvalidUsage

    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nprovider = "tools"\nmodel = "web-search"\nunits = { calls = "0.005" }\n')
    instance = Outlay(tmp_path / "outlay.db", prices=prices)
    try:
        with outlay.attribute(tenant="acme"):
            with pytest.raises(InvalidUsage, match=r"units\.calls: must be below 10\^15"):
                instance.record_tool("web-search", 10**40)
            with pytest.raises(InvalidUsage, match=r"units\.gpu_seconds: must be below 10\^15"):
                instance.record_usage(
                    operation="gpu",
                    provider="tools",
                    model="web-search",
                    usage={"units": {"gpu_seconds": "1e15"}},
                )
            event = instance.record_tool("web-search", 10**6)
        assert event.cost == Decimal("5000.000")
        [row] = instance.reports().tenants(*WINDOW)
        assert (row["events"], row["unpriced_events"]) == (1, 0)
    finally:
        instance.close()


def test_batching_mode_drains_on_flush(tmp_path: Path) -> None:
    instance = Outlay(tmp_path / "outlay.db", mode="batching")
    try:
        with outlay.attribute(tenant="acme"):
            costs = [
                instance.record_llm(
                    provider="openai", model="gpt-4o-mini", usage=Usage(input_tokens=i + 1)
                ).cost
                for i in range(500)
            ]
        instance.flush()
        [row] = instance.reports().tenants(*WINDOW)
        assert row["events"] == 500
        assert Decimal(row["cost"]) == sum(c for c in costs if c is not None)
    finally:
        instance.close()


def test_flush_can_be_bounded_when_the_log_keeps_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlay._errors import BackendError

    instance = outlay.configure(tmp_path / "outlay.db", mode="batching")
    try:

        def full_disk(payloads: object) -> None:
            raise OSError("No space left on device")

        monkeypatch.setattr(instance.log, "append", full_disk)
        with outlay.attribute(tenant="acme"):
            instance.record_tool("web-search", 1)
        started = time.monotonic()
        with pytest.raises(BackendError, match="1 events are not durable yet"):
            outlay.flush(timeout=0.3)
        assert time.monotonic() - started < 5
        monkeypatch.undo()
        outlay.flush(timeout=10)  # the log took it once it could
        [row] = instance.reports().tenants(*WINDOW)
        assert row["events"] == 1
    finally:
        monkeypatch.undo()  # a log that works again, or shutdown() would wait on it forever
        outlay.shutdown()


def test_try_record_many_records_at_once_or_not_at_all(tmp_path: Path) -> None:
    durable = Outlay(tmp_path / "durable" / "outlay.db")  # each its own directory: its own log
    batching = Outlay(tmp_path / "batching" / "outlay.db", mode="batching")
    try:
        for instance in (durable, batching):
            with outlay.attribute(tenant="acme"):
                event = instance.recorder.build(
                    operation="chat", provider="openai", model="gpt-4o-mini", usage=Usage(input_tokens=7)
                )
            instance.recorder.try_record_many([event])
        # Durable: committed at once. Batching: refused (its buffer drains on its own thread), and
        # nothing was buffered half-way.
        assert durable.log.end_offset() == 1
        batching.flush()
        assert batching.log.end_offset() == 0
    finally:
        durable.close()
        batching.close()


@pytest.fixture
def engine() -> Iterator[BudgetEngine]:
    """A fresh default engine: run budgets (outlay.run(budget=...)) are kept by the default one."""
    previous = budgets.get_engine()
    yield budgets.configure(BudgetEngine(InMemoryBudgetStore()))
    budgets.configure(previous)


def test_meter_enforces_a_run_budget_and_records_the_decision(pipeline: Outlay, engine: BudgetEngine) -> None:
    pipeline.install_decision_sink(engine)
    calls = 0
    with (
        outlay.attribute(tenant="acme"),
        outlay.run("agent", budget=Budget(limit="0.01")),
        pytest.raises(outlay.BudgetExceeded) as info,
    ):
        for _ in range(10):
            with pipeline.recorder.meter(
                provider="openai", model="gpt-4o", input_tokens=1000, max_output_tokens=200
            ) as call:
                call.set_usage(Usage(input_tokens=1000, output_tokens=200))
            calls += 1
    # each call: 1000 x $2.5/M + 200 x $10/M = $0.0045; the third would need $0.0045 more than is left
    assert calls == 2
    assert "0.01" in str(info.value)
    rows = pipeline.reports().breakdown("operation", *WINDOW)
    by_op = {r["operation"]: r for r in rows}
    assert by_op["chat"]["cost"] == "0.009"
    assert by_op["decision:denied"]["events"] == 1


def _tree_links(node: dict[str, Any], parent: str | None = None) -> dict[str, str | None]:
    links = {node["run_id"]: parent}
    for child in node["children"]:
        links.update(_tree_links(child, node["run_id"]))
    return links


def test_a_run_whose_only_event_is_a_refusal_stays_under_its_parent(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    pipeline.install_decision_sink(engine)
    with outlay.attribute(tenant="acme"), outlay.run("orchestrator") as root:
        pipeline.record_tool("search", 1, cost=Decimal("0.01"))
        with outlay.run("planner") as mid, outlay.run("writer", budget=Budget(limit="0.000001")) as leaf:
            with pytest.raises(outlay.BudgetExceeded):
                with pipeline.recorder.meter(provider="openai", model="gpt-4o", max_output_tokens=100):
                    pass
    pipeline.catch_up()
    (denied,) = [e.event for e in pipeline.ledger.entries(*_WINDOW) if e.event.operation == "decision:denied"]
    assert (denied.run_id, denied.parent_run_id, denied.root_run_id) == (leaf.id, mid.id, root.id)
    assert denied.run_path == (root.id, mid.id)
    # the writer, which recorded nothing but its refusal, hangs under the planner, not the root
    links = _tree_links(pipeline.reports().run_tree(root.id))
    assert links == {root.id: None, mid.id: root.id, leaf.id: mid.id}


def test_a_run_refused_as_it_opens_is_recorded_under_the_run_it_opened_in(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    engine.plans = budgets.Plans(["free", "pro"], {"acme": "free"})
    pipeline.install_decision_sink(engine)
    with outlay.attribute(tenant="acme"), outlay.run("orchestrator") as root, outlay.run("planner") as mid:
        with pytest.raises(outlay.NotEntitled), outlay.run("deep-research", requires="pro"):
            pass
    pipeline.catch_up()
    (refused,) = [e.event for e in pipeline.ledger.entries(*_WINDOW)]
    assert refused.operation == "decision:not_entitled"
    assert (refused.parent_run_id, refused.root_run_id) == (mid.id, root.id)
    assert refused.run_path == (root.id, mid.id)
    assert refused.run_id not in (root.id, mid.id)
    assert refused.agent is None  # not the planner's name: the refused run is another one


def test_a_soft_limit_crossed_as_a_call_ends_in_another_thread_is_recorded_in_the_calls_context(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    engine.add_policy(Budget(scope="tenant", soft="0.001", limit="100"))
    pipeline.install_decision_sink(engine)
    with outlay.attribute(tenant="acme", feature="search", environment="staging"), outlay.run("agent") as run:
        call = pipeline.recorder.open_meter(provider="openai", model="gpt-4o", max_output_tokens=10)
    call.set_usage(Usage(input_tokens=1000, output_tokens=100))  # $0.0035: past the soft limit
    ender = threading.Thread(target=call.finish)  # a stream closed by a callback, on its own thread
    ender.start()
    ender.join()
    pipeline.catch_up()
    (soft,) = [
        e.event for e in pipeline.ledger.entries(*_WINDOW) if e.event.operation.startswith("decision:")
    ]
    assert soft.operation == "decision:soft_exceeded"
    assert (soft.tenant_id, soft.environment, soft.feature, soft.run_id) == (
        "acme",
        "staging",
        "search",
        run.id,
    )


def test_a_long_metered_call_is_given_its_own_ttl_and_a_bad_one_is_refused(pipeline: Outlay) -> None:
    # An expired hold is charged as a crashed caller's: a stream longer than the engine's
    # reservation_ttl (300 s) needs a ttl of its own, or it counts at least its estimate.
    clock = [1_000_000.0]
    store = InMemoryBudgetStore(clock=lambda: clock[0])
    engine = BudgetEngine(store, policies=[Budget(limit="1", scope="tenant", key="acme")])
    with outlay.attribute(tenant="acme"):
        with pipeline.recorder.meter(
            provider="openai", model="gpt-4o", input_tokens=1000, max_output_tokens=1000, budgets=engine,
            ttl=3600,
        ) as call:  # fmt: skip
            clock[0] += 900  # a 15-minute stream
            assert engine.status({"tenant": "acme"}, engine.policies[0]).spent == 0  # still held
            call.set_usage(Usage(input_tokens=1000, output_tokens=10))
        assert engine.status({"tenant": "acme"}, engine.policies[0]).spent == Decimal("0.0026")
        for bad in (0, -1, float("inf"), "60", True):
            with pytest.raises(InvalidInput, match="ttl"):
                pipeline.recorder.open_meter(provider="openai", model="gpt-4o", budgets=engine, ttl=bad)


def test_meter_records_a_failed_call_and_releases_its_reservation(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    budget = Budget(limit="1", scope="tenant", key="acme")
    engine.add_policy(budget)
    with outlay.attribute(tenant="acme"), pytest.raises(ConnectionError):
        with pipeline.recorder.meter(provider="openai", model="gpt-4o", input_tokens=10, budgets=engine):
            raise ConnectionError("upstream went away")
    pipeline.catch_up()
    [entry] = list(pipeline.ledger.entries(*_instants()))
    assert entry.event.status == "error"
    assert entry.event.cost is None  # failed before usage: unknown, not 0
    status = engine.status({"tenant": "acme"}, budget)
    assert status.reserved == 0


def test_a_metered_call_on_a_model_with_no_price_is_never_free_to_a_budget(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    budget = Budget(limit="0.05", scope="tenant", key="acme")
    engine.add_policy(budget)
    admitted = 0
    with outlay.attribute(tenant="acme"), pytest.raises(outlay.BudgetExceeded):
        for _ in range(10):
            with pipeline.recorder.meter(
                provider="openai", model="gpt-4o-mini-typo", input_tokens=100_000, budgets=engine
            ) as call:
                call.set_usage(Usage(input_tokens=100_000, output_tokens=10))
            admitted += 1
    # each call holds and is charged the fallback ($0.01): the fifth fills the $0.05
    assert admitted == 5
    assert engine.status({"tenant": "acme"}, budget).spent == Decimal("0.05")
    pipeline.catch_up()
    assert {e.event.cost for e in pipeline.ledger.entries(*_instants())} == {None}  # the ledger: unknown


def test_a_metered_call_that_cannot_be_recorded_leaves_no_hold(
    pipeline: Outlay, engine: BudgetEngine
) -> None:
    budget = Budget(limit="1", scope="tenant", key="acme")
    engine.add_policy(budget)
    with outlay.attribute(tenant="acme"):
        call = pipeline.recorder.open_meter(
            provider="openai", model="gpt-4o", input_tokens=1000, max_output_tokens=1000, budgets=engine
        )
        call.response({"model": "m" * 300, "usage": {"prompt_tokens": 1000, "completion_tokens": 10}})
        with pytest.raises(outlay.InvalidInput, match="model"):
            call.finish()  # the provider answered a model name no event can hold
        held = engine.status({"tenant": "acme"}, budget)
        assert held.reserved == 0 and held.spent == Decimal("0.0125")  # its estimate counts
        failing = pipeline.recorder.open_meter(
            provider="openai", model="gpt-4o", input_tokens=1000, budgets=engine
        )
        failing.model = "m" * 300
        with pytest.raises(outlay.InvalidInput, match="model"):
            failing.fail()
        assert engine.status({"tenant": "acme"}, budget).reserved == 0


@pytest.mark.slow
def test_a_thread_recording_at_exit_does_not_open_another_home(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(
        "import sys, threading, time\n"
        "import outlay\n"
        "outlay.configure(sys.argv[1])\n"
        "def loop():\n"
        "    while True:\n"
        "        with outlay.attribute(tenant='a'):\n"
        "            outlay.record_tool('x', 1)\n"
        "threading.Thread(target=loop, daemon=True).start()\n"
        "time.sleep(0.2)\n"
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAY_")}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "prod")], cwd=cwd, env=env, timeout=60, check=False
    )
    assert list(cwd.iterdir()) == []  # no ./.outlay/events.db taking the last events


def test_kill_9_of_a_recording_process_loses_no_returned_event(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(home), "acme", "100000"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert child.stdout is not None
    returned: dict[str, Decimal] = {}
    deadline = time.monotonic() + 30
    while len(returned) < 150 and time.monotonic() < deadline:
        event_id, cost = child.stdout.readline().split()
        returned[event_id] = Decimal(cost)
    child.send_signal(signal.SIGKILL)
    child.wait()
    for line in child.stdout.read().splitlines():  # what it printed before dying also returned
        event_id, cost = line.split()
        returned[event_id] = Decimal(cost)
    child.stdout.close()
    instance = Outlay(home)
    try:
        reports = instance.reports()
        ids = {entry.event.event_id for entry in instance.ledger.entries(*_instants())}
        assert set(returned) <= ids  # every event whose record() returned is there...
        assert instance.ledger.event_count() == len(ids)  # ...once
        [row] = reports.tenants(*WINDOW)
        assert Decimal(row["cost"]) >= sum(returned.values())
    finally:
        instance.close()


@pytest.mark.slow
def test_several_processes_recording_at_once_sum_exactly(tmp_path: Path) -> None:
    home = tmp_path / "outlay.db"
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(home), f"t{i}", "200"], stdout=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    expected = Decimal(0)
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        expected += sum(Decimal(line.split()[1]) for line in out.splitlines())
    instance = Outlay(home)
    try:
        rows = instance.reports().tenants(*WINDOW)
        assert sorted(r["tenant"] for r in rows) == ["t0", "t1", "t2"]
        assert sum(r["events"] for r in rows) == 600
        assert sum(Decimal(r["cost"]) for r in rows) == expected
    finally:
        instance.close()


def _instants() -> tuple[object, object]:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def test_outlay_report_sees_events_only_the_embedded_log_holds(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outlay.cli import main

    home = tmp_path / "outlay.db"
    instance = Outlay(home)
    with outlay.attribute(tenant="zed"):
        instance.record_llm(provider="openai", model="gpt-4o", usage=Usage(input_tokens=1000))
    instance.log.close()  # like a process that exits without ever reading a report
    assert not home.exists()
    result = CliRunner().invoke(main, ["report", "tenants", "--ledger", str(home), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"cost": "0.0025"' in result.output


@pytest.mark.parametrize("quantity", ["3_000", "٣", "３"])
def test_a_quantity_must_be_a_plain_decimal(tmp_path: Path, quantity: str) -> None:
    """Decimal() reads "3_000" as 3000 and other scripts' digits as digits: a tool quantity typed
    or parsed wrongly was billed as whatever Decimal made of it. Money already refused these."""
    from outlay._errors import InvalidUsage

    with Outlay(tmp_path / "outlay.db") as pipeline, outlay.attribute(tenant="acme"):
        with pytest.raises(InvalidUsage, match="plain decimal") as info:
            pipeline.record_tool("web-search", quantity)
        assert info.value.field == "units.calls"  # a tool's unit
        assert pipeline.record_tool("web-search", " 3 ").usage.units == {"calls": Decimal(3)}


def test_labels_given_to_record_are_bounded_and_nothing_is_recorded(pipeline: Outlay) -> None:
    from outlay._errors import InvalidEvent

    usage = Usage(input_tokens=10)
    with outlay.attribute(tenant="acme"):
        for labels, problem in (
            ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
            ({"note": "x" * 5_000_000}, "at most 1024 characters, got 5000000"),
        ):
            with pytest.raises(
                InvalidEvent, match=f"labels: {problem}|labels: note: values must be {problem}"
            ):
                pipeline.record_llm(provider="openai", model="gpt-4o", usage=usage, labels=labels)
            with pytest.raises(InvalidEvent, match="labels"):
                pipeline.record_tool("search", 1, labels=labels)
            with pytest.raises(InvalidEvent, match="labels"):
                pipeline.record_usage(operation="retrieval", provider="x", model="y", usage={}, labels=labels)
            ready_made = outlay.CostEvent(tenant_id="acme", operation="tool", labels=labels,
                                          priced=False, unpriced_reason="no price")  # fmt: skip
            with pytest.raises(InvalidEvent, match="labels"):
                pipeline.record(ready_made)
    assert pipeline.reports().tenants(*WINDOW) == []


def test_events_stored_before_labels_were_bounded_are_still_read_and_rerated(pipeline: Outlay) -> None:
    from outlay.events import CostEvent, encode_event
    from outlay.ledger import rerate

    labels = {"ключ с пробелом": "v", "note": "x" * 200_000, **{f"k{i}": "v" for i in range(100)}}
    old = CostEvent(tenant_id="acme", provider="openai", model="gpt-4o", usage=Usage(input_tokens=1000),
                    priced=False, unpriced_reason="no price then", labels=labels)  # fmt: skip
    pipeline.log.append([encode_event(old)])  # as an outlay without the bounds recorded it
    [row] = pipeline.reports().tenants(*WINDOW)
    assert row["events"] == 1
    [entry] = pipeline.ledger.entries(*_WINDOW)
    assert dict(entry.event.labels) == labels
    result = rerate(pipeline.ledger, lambda e: pipeline.recorder.catalog.rate(
        e.usage, provider=e.provider or "", model=e.model or "", at=e.time), *WINDOW)  # fmt: skip
    assert (result.examined, result.newly_priced) == (1, 1)
    assert pipeline.reports().tenants(*WINDOW)[0]["cost"] == "0.0025"


def test_meter_holds_a_priority_call_at_the_priority_price_and_refuses_a_bad_tier(pipeline: Outlay) -> None:
    # gpt-4o: 1,000 tokens in and out are $0.0125 at standard, $0.02125 at priority (1.7x). Held at
    # standard, calls asking for priority could pass a hard limit by 70% before any settled.
    engine = BudgetEngine(InMemoryBudgetStore(), policies=[Budget(limit="0.015", scope="tenant", key="acme")])
    call = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 1000}

    class NotMade(Exception):
        """The call is not made: the hold is given back."""

    with outlay.attribute(tenant="acme"):
        for tier in (None, "standard", "Default", "flex"):  # flex is cheaper: held at standard
            with pytest.raises(NotMade), pipeline.recorder.meter(**call, budgets=engine, service_tier=tier):
                raise NotMade
        with pytest.raises(outlay.BudgetExceeded):
            with pipeline.recorder.meter(**call, budgets=engine, service_tier="priority"):
                pytest.fail("a priority call past the limit was let through")
        with pytest.raises(InvalidInput, match="service_tier"):
            with pipeline.recorder.meter(**call, budgets=engine, service_tier="no such tier!"):
                pytest.fail("a bad tier was let through")


def test_meter_holds_a_tier_priced_only_by_its_own_override_at_that_price(tmp_path: Path) -> None:
    # A fine-tuned model served only at priority, priced only by a priority override: its standard
    # price is unknown but the tier the call asks for has one. 1,000 tokens in and out cost $0.05
    # at it; held at the $0.01 unpriced fallback, five concurrent calls would pass a $0.02 hard
    # limit by $0.23 before one settled.
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "ft:gpt-4o:acme"\nservice_tier = "priority"\n'
        'input_mtok = "10"\noutput_mtok = "40"\n'
    )
    engine = BudgetEngine(InMemoryBudgetStore(), policies=[Budget(limit="0.02", scope="tenant", key="acme")])
    call = {"provider": "openai", "model": "ft:gpt-4o:acme", "input_tokens": 1000, "max_output_tokens": 1000}
    with Outlay(tmp_path / "home" / "outlay.db", prices=prices) as pipeline, outlay.attribute(tenant="acme"):
        with pytest.raises(outlay.BudgetExceeded):
            with pipeline.recorder.meter(**call, budgets=engine, service_tier="priority"):
                pytest.fail("a $0.05 priority call was held at the $0.01 fallback and let through")
        metered = pipeline.recorder.open_meter(**call, budgets=engine)  # standard: unknown, the fallback
        metered.fail(Usage())
