"""A process killed mid-call (``kill -9``) does not lose the metered call: the next start records it.

Real processes: a child meters a call (through the openai SDK against the fake provider, which
hangs it, or with ``outlay.meter``) and is killed with SIGKILL while the call is in flight; then a
new ``Outlay`` is opened on the same home, as the next run of the program would.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import Outlay, Usage, attribute
from outlay._errors import BackendError, BackendUnavailable, ConfigError
from outlay._lost import METERED_ESTIMATE, METERED_REASON
from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore, Scope
from outlay.events import CostEvent
from outlay.testing import FakeProvider, Fault

_PRELUDE = """
import sys, time
import outlay
home = outlay.Outlay(sys.argv[1])
"""

_SDK_CALL = """
from outlay.instrument import openai_client
client = openai_client(outlay=home, base_url=sys.argv[2] + "/v1", api_key="sk-test", max_retries=0)
with outlay.attribute(tenant="acme", feature="summarise", user="u-7"), outlay.run("digest"):
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=50)
    print("done", flush=True)
    sys.stdin.readline()
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
                                   max_tokens=400)
"""

_METER_CALL = """
with outlay.attribute(tenant="globex"):
    metered = home.recorder.open_meter(provider="openai", model="gpt-4o", input_tokens=1000,
                                       max_output_tokens=500)
print("open", flush=True)
time.sleep(60)
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PRELUDE + code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OUTLAY_BUDGET_URL": ""},
    )


def _wait_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line == expected, f"the child said {line!r} (exit {process.poll()})"


def _kill(process: subprocess.Popen[str]) -> None:
    process.kill()  # SIGKILL: no atexit, no flush, nothing
    process.wait(timeout=30)
    assert process.stdout is not None
    process.stdout.close()
    assert process.stdin is not None
    process.stdin.close()


def _events(home: Path, **options: object) -> list[CostEvent]:
    with Outlay(home / "outlay.db", **options) as pipeline:  # type: ignore[arg-type]
        pipeline.catch_up()
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        entries = pipeline.ledger.entries(start, end)
        return [e.event for e in entries if not e.event.operation.startswith("decision")]


def _wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_sdk_call_in_flight_when_the_process_is_killed_is_recorded_by_the_next_start(
    tmp_path: Path, fake: FakeProvider, base_url: str
) -> None:
    child = _start(_SDK_CALL, str(tmp_path / "outlay.db"), base_url)
    try:
        _wait_line(child, "done")  # the first call answered
        fake.fail(Fault.hang())  # the second hangs...
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        _wait_for(lambda: len(fake.requests) == 2)  # ... and the provider is billing it
    finally:
        _kill(child)

    events = _events(tmp_path)
    assert len(events) == 2, events
    answered = next(e for e in events if e.model == "gpt-4o-mini")
    lost = next(e for e in events if e.model == "gpt-4o")
    assert answered.status == "ok" and "outlay.lost" not in answered.labels
    assert (lost.tenant_id, lost.feature, lost.user_id, lost.agent) == ("acme", "summarise", "u-7", "digest")
    assert lost.run_id is not None and lost.run_id == answered.run_id
    assert (lost.provider, lost.status) == ("openai", "estimated")
    assert lost.priced and lost.cost is not None and lost.cost > 0  # unknown is not zero
    assert lost.labels["outlay.lost"] == METERED_REASON
    assert lost.labels["outlay.estimate"] == METERED_ESTIMATE
    assert not lost.usage.complete and lost.usage.reason == METERED_REASON

    # A second start records nothing more, and the journal is gone.
    assert len(_events(tmp_path)) == 2
    assert [p.name for p in (tmp_path / "inflight").iterdir()] == []


def test_a_meter_left_open_by_a_killed_process_is_recorded_once_at_its_estimate(tmp_path: Path) -> None:
    child = _start(_METER_CALL, str(tmp_path / "outlay.db"))
    try:
        _wait_line(child, "open")
    finally:
        _kill(child)
    with Outlay(tmp_path / "outlay.db") as probe:
        estimate = probe.catalog.estimate(
            provider="openai", model="gpt-4o", input_tokens=1000, max_output_tokens=500
        )
    events = _events(tmp_path)
    assert [(e.tenant_id, e.model, e.status, e.cost) for e in events] == [
        ("globex", "gpt-4o", "estimated", estimate)
    ]
    assert _events(tmp_path) == events  # never twice


def test_a_live_process_journal_is_left_alone_by_another_start(tmp_path: Path) -> None:
    child = _start(_METER_CALL, str(tmp_path / "outlay.db"))
    try:
        _wait_line(child, "open")
        assert _events(tmp_path) == []  # its call is in flight, not lost
        assert len(list((tmp_path / "inflight").iterdir())) == 1
    finally:
        _kill(child)
    assert len(_events(tmp_path)) == 1  # once it is dead


def test_a_call_finished_normally_is_not_recorded_again(tmp_path: Path) -> None:
    code = """
    with outlay.attribute(tenant="acme"), home.recorder.meter(provider="openai", model="gpt-4o") as m:
        m.set_usage(outlay.Usage(input_tokens=10, output_tokens=5))
    print("finished", flush=True)
    time.sleep(60)
    """
    child = _start(textwrap.dedent(code), str(tmp_path / "outlay.db"))
    try:
        _wait_line(child, "finished")
    finally:
        _kill(child)
    events = _events(tmp_path)
    assert [(e.tenant_id, e.status) for e in events] == [("acme", "ok")]
    assert list((tmp_path / "inflight").iterdir()) == []  # the dead process's file was dropped


_BATCHING = """
home.close()
home = outlay.Outlay(sys.argv[1], mode="batching")
home.recorder._batcher._max_delay = float(sys.argv[2])  # how long an event may stay buffered
with outlay.attribute(tenant="acme"), home.recorder.meter(provider="openai", model="gpt-4o",
                                                        input_tokens=100) as m:
    m.set_usage(outlay.Usage(input_tokens=10, output_tokens=5))
time.sleep(float(sys.argv[3]))
print("recorded", flush=True)
time.sleep(60)
"""


def test_batching_a_call_buffered_when_the_process_is_killed_is_recovered(tmp_path: Path) -> None:
    # Recorded into the buffer, not yet durable: the journal must not have forgotten the call.
    child = _start(_BATCHING, str(tmp_path / "outlay.db"), "3600", "0")
    try:
        _wait_line(child, "recorded")
    finally:
        _kill(child)
    events = _events(tmp_path)
    assert [(e.tenant_id, e.status) for e in events] == [("acme", "estimated")]


def test_batching_a_call_made_durable_before_the_kill_is_not_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its buffer reached the log while the process sat idle: the journal heard of it then.
    child = _start(_BATCHING, str(tmp_path / "outlay.db"), "0.05", "1")
    try:
        _wait_line(child, "recorded")
    finally:
        _kill(child)
    with caplog.at_level(logging.WARNING, logger="outlay"):
        events = _events(tmp_path)
    assert [(e.tenant_id, e.status) for e in events] == [("acme", "ok")]
    assert not [r for r in caplog.records if "recorded metered call" in r.getMessage()]


def test_a_corrupt_journal_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _start(_METER_CALL, str(tmp_path / "outlay.db"))
    try:
        _wait_line(child, "open")
    finally:
        _kill(child)
    (path,) = (tmp_path / "inflight").iterdir()
    with path.open("ab") as handle:
        handle.write(b'+{"id": "01a24de0-0000-7000-8000-00000000')  # a line cut short
    with caplog.at_level(logging.WARNING, logger="outlay"):
        events = _events(tmp_path)
    assert [e.tenant_id for e in events] == ["globex"]
    assert any("not a journal line" in r.getMessage() for r in caplog.records)


def test_no_journal_when_disabled_or_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Outlay(tmp_path / "outlay.db", journal=False) as pipeline:
        with pipeline.recorder.meter(provider="openai", model="gpt-4o") as m:
            m.set_usage(_usage())
    assert not (tmp_path / "inflight").exists()
    monkeypatch.setenv("OUTLAY_JOURNAL", "off")
    with Outlay(tmp_path / "outlay.db") as pipeline:
        assert pipeline.journal is None
        with pipeline.recorder.meter(provider="openai", model="gpt-4o") as m:
            m.set_usage(_usage())
    assert not (tmp_path / "inflight").exists()
    monkeypatch.delenv("OUTLAY_JOURNAL")
    with pytest.raises(ConfigError, match="journal"):
        Outlay(tmp_path / "outlay.db", journal=b"/tmp/x")  # type: ignore[arg-type]
    with Outlay("memory://") as pipeline:
        assert pipeline.journal is None
    with pytest.raises(ConfigError, match="memory"):
        Outlay("memory://", journal=True)


def _usage() -> Usage:
    return Usage(input_tokens=3, output_tokens=4)


def test_the_estimate_of_an_unpriced_model_stays_unpriced(tmp_path: Path) -> None:
    code = """
    metered = home.recorder.open_meter(provider="openai", model="no-such-model-xyz")
    print("open", flush=True)
    time.sleep(60)
    """
    child = _start(textwrap.dedent(code), str(tmp_path / "outlay.db"))
    try:
        _wait_line(child, "open")
    finally:
        _kill(child)
    (event,) = _events(tmp_path)
    assert event.status == "estimated" and not event.priced and event.unpriced_reason
    assert event.cost is None or event.cost != Decimal(0)


def test_a_forked_child_killed_mid_call_is_recovered_while_its_parent_lives(tmp_path: Path) -> None:
    with Outlay(tmp_path / "outlay.db") as pipeline:
        with attribute(tenant="parent"), pipeline.recorder.meter(provider="openai", model="gpt-4o") as m:
            m.set_usage(_usage())  # the parent's journal file exists now

        def child() -> None:
            with attribute(tenant="child"):
                pipeline.recorder.open_meter(provider="openai", model="gpt-4o", input_tokens=10)
            os.kill(os.getpid(), signal.SIGKILL)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(timeout=30)
        assert process.exitcode == -signal.SIGKILL
        assert pipeline.recover_lost_calls() == 1  # the child's file, never the parent's own
        assert pipeline.recover_lost_calls() == 0
    assert sorted((e.tenant_id, e.status) for e in _events(tmp_path)) == [
        ("child", "estimated"),
        ("parent", "ok"),
    ]


def test_a_call_the_journal_cannot_note_is_refused_and_its_hold_given_back(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the journal's directory would go")
    engine = BudgetEngine(InMemoryBudgetStore())
    budget = Budget(Decimal(5), scope="tenant", key="acme", period="month")
    engine.add_policy(budget)
    with Outlay(tmp_path / "outlay.db", journal=tmp_path / "blocked" / "inflight") as pipeline:
        with attribute(tenant="acme"), pytest.raises(BackendError, match="admission journal"):
            pipeline.recorder.open_meter(provider="openai", model="gpt-4o", budgets=engine)
    status = engine.status(Scope(tenant="acme"), budget)
    assert (status.spent, status.reserved) == (0, 0)


def test_an_event_the_log_refused_is_recorded_as_it_was_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Outlay(tmp_path / "outlay.db")

    def refuse(event: CostEvent) -> CostEvent:
        raise BackendUnavailable("the event log is down")

    monkeypatch.setattr(pipeline.recorder, "record", refuse)
    with attribute(tenant="acme"), pytest.raises(BackendUnavailable):
        with pipeline.recorder.meter(provider="openai", model="gpt-4o") as m:
            m.set_usage(Usage(input_tokens=1000, output_tokens=100))
    pipeline.close()
    (event,) = _events(tmp_path)
    assert (event.tenant_id, event.status, event.usage.input_tokens) == ("acme", "ok", 1000)
    assert "outlay.lost" not in event.labels  # its exact cost, not an estimate
