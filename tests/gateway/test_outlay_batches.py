"""The hooks' blocking work in batches on one thread: concurrent calls share durable commits, and a
failure of the event log fails each call of the batch clearly without leaving a hold behind."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from outlay._errors import BackendUnavailable, BudgetExceeded
from outlay._money import money_sum
from outlay._runtime import Outlay
from outlay._usage import Usage
from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore, Scope, SQLiteBudgetStore
from outlay.events import decode_event
from outlay.gateway import Admission, Call, Gateway, Outcome, OutlayHooks, Principal, Upstream
from outlay.gateway._outlay_hooks import _Job
from outlay.keys import InMemoryKeyStore
from outlay.stream import SQLiteEventLog
from outlay.testing import FakeProvider

T = TypeVar("T")
MESSAGES = [{"role": "user", "content": "summarise the incident"}]
BUDGET = Budget(scope="tenant", period="month", limit="100.00")


class _CountingLog(SQLiteEventLog):
    """A SQLite log that counts its appends (commits), and can be told to fail them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.appends = 0
        self.failing = False

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        if self.failing:
            raise BackendUnavailable("event log disk is full (test)")
        self.appends += 1
        return super().append(payloads)

    def try_append(self, payloads: Sequence[bytes]) -> list[int] | None:
        if self.failing:
            raise BackendUnavailable("event log disk is full (test)")
        offsets = super().try_append(payloads)
        self.appends += offsets is not None
        return offsets


@pytest.fixture
def durable(
    gateway: Gateway, fake: FakeProvider, tmp_path: Path
) -> Iterator[tuple[OutlayHooks, _CountingLog]]:
    fake.reset()
    log = _CountingLog(tmp_path / "events.db")
    home = Outlay(tmp_path / "outlay.db", log=log)
    engine = BudgetEngine(store=SQLiteBudgetStore(tmp_path / "budgets.db"), policies=[BUDGET])
    hooks = OutlayHooks(InMemoryKeyStore(), outlay=home, engine=engine, cache_ttl=0)
    assert hooks._batches is not None  # SQLite backends: the blocking work leaves the event loop
    gateway.hooks = hooks
    yield hooks, log
    home.close()


async def _calls(url: str, secret: str, n: int) -> list[tuple[int, str | None]]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)

    async def one() -> tuple[int, str | None]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=50,
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.message
        return raw.http_response.status_code, raw.headers.get("x-outlay-cost")

    try:
        return await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await client.close()


async def test_concurrent_calls_are_each_recorded_once_with_fewer_commits_than_calls(
    gateway: Gateway, durable: tuple[OutlayHooks, _CountingLog]
) -> None:
    hooks, log = durable
    _, secret = hooks.keys.create("acme")
    answers = await _calls(gateway.url, secret, 48)  # type: ignore[attr-defined]
    assert {status for status, _ in answers} == {200}
    costs = [Decimal(cost) for _, cost in answers if cost is not None]
    assert len(costs) == 48
    assert log.end_offset() == 48  # every call durable once
    assert log.appends < 48  # calls that met in a batch shared one commit
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert status.reserved == 0  # every hold settled
    assert status.spent == money_sum(costs)  # and the budget saw exactly what the clients were told


async def test_a_failing_event_log_fails_every_call_of_the_batch_and_keeps_no_hold(
    gateway: Gateway, durable: tuple[OutlayHooks, _CountingLog]
) -> None:
    hooks, log = durable
    _, secret = hooks.keys.create("acme")
    log.failing = True
    answers = await _calls(gateway.url, secret, 16)  # type: ignore[attr-defined]
    assert {status for status, _ in answers} == {503}
    assert all(message is not None and "disk is full" in message for _, message in answers)
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert status.reserved == 0  # the holds did not wait for their TTL
    assert status.spent > 0  # the provider did bill these calls: the budget counts them
    log.failing = False
    answers = await _calls(gateway.url, secret, 4)  # type: ignore[attr-defined]
    assert {status for status, _ in answers} == {200}  # and the gateway recovers at once


def _call() -> Call:
    upstream = Upstream("openai", "openai", "http://127.0.0.1:9/v1")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50}
    raw = json.dumps(body).encode()
    return Call("chat", "gpt-4o-mini", "gpt-4o-mini", upstream, False, body, {}, raw)


async def _principal(hooks: OutlayHooks, **key: str) -> Principal:
    """Who calls with a new key of tenant acme (``key``: its options, e.g. a budget)."""
    _, secret = hooks.keys.create("acme", **key)
    return await hooks.authenticate({"authorization": f"Bearer {secret}"})


async def _idle(hooks: OutlayHooks) -> None:
    assert hooks._batches is not None
    for _ in range(400):  # the batch in flight, then the one that handles what it orphaned
        if not hooks._batches._busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the hooks' blocking thread never went idle")


@contextmanager
def _store_busy(hooks: OutlayHooks) -> Iterator[None]:
    """Another thread of this process holds the budget store until the block ends."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with hooks.engine.store.batch():
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join()


async def test_a_caller_cancelled_during_its_admission_leaves_no_hold(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, _ = durable
    principal = await _principal(hooks)
    with _store_busy(hooks):  # so every admission is handed to the blocking thread...
        waiting = [asyncio.ensure_future(hooks.admit(principal, _call())) for _ in range(8)]
        await asyncio.sleep(0)
        for task in waiting:
            task.cancel()  # ...and its client goes away before the answer
        with pytest.raises(asyncio.CancelledError):
            await asyncio.gather(*waiting)
    await _idle(hooks)
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert status.reserved == 0  # released at once, not at the holds' TTL
    assert status.spent == 0


async def test_a_caller_cancelled_during_its_completion_is_still_recorded_and_settled(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    principal = await _principal(hooks)
    admission = await hooks.admit(principal, _call())
    await hooks.admit(principal, _call())  # in flight too: the completion is handed over
    usage = Usage(input_tokens=1000, output_tokens=50)
    task = asyncio.ensure_future(hooks.complete(admission, Outcome(200, usage, "gpt-4o-mini", 0.2)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _idle(hooks)
    assert log.end_offset() == 1  # the event is recorded all the same
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert status.reserved == admission.reserved  # only the other call's hold is left
    assert status.spent > 0  # and the hold settled with the call's cost


async def test_an_admission_runs_on_the_event_loop_when_the_store_is_free(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    principal = await _principal(hooks)
    handed = _spy_hand_offs(hooks)
    admission = await hooks.admit(principal, _call())
    assert handed == []  # no hand-off to the blocking thread and back
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert admission.reserved is not None and admission.reserved > 0
    assert status.reserved == admission.reserved  # committed: visible to every process
    with _store_busy(hooks):
        waiting = asyncio.ensure_future(hooks.admit(principal, _call()))
        await asyncio.sleep(0.05)
        assert [kind for kind, _ in handed] == ["admit"]  # the store was busy: handed over, loop free
        assert not waiting.done()
    await waiting
    assert log.end_offset() == 0  # admissions record nothing unless they decide something


async def test_a_refusal_decided_on_the_loop_is_recorded_before_the_caller_hears_of_it(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    principal = await _principal(hooks, budget="0.00001/day")
    with pytest.raises(BudgetExceeded):
        await hooks.admit(principal, _call())
    assert log.end_offset() == 1  # the decision, durable already
    (record,) = log.read("test-reader", 10)
    event = decode_event(record.payload)
    assert (event.operation, event.tenant_id) == ("decision:denied", "acme")
    assert hooks.engine.status(Scope(tenant="acme"), BUDGET).reserved == 0


async def _waits_off_the_loop(db: Path, start: Callable[[], Awaitable[T]]) -> T:
    """``start()`` while another connection holds ``db``'s write lock, as another gateway worker
    would: the event loop stays free and the call waits on the blocking thread; its result once the
    lock is released."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        began = time.perf_counter()
        waiting = asyncio.ensure_future(start())
        await asyncio.sleep(0.2)
        assert time.perf_counter() - began < 1.0  # the loop was not stuck behind the file lock
        assert not waiting.done()  # the call waits for it on the blocking thread
    finally:
        other.execute("COMMIT")
        other.close()
    return await waiting


async def test_another_process_writing_never_blocks_the_event_loop(
    durable: tuple[OutlayHooks, _CountingLog], tmp_path: Path
) -> None:
    hooks, _ = durable
    principal = await _principal(hooks)
    admission = await _waits_off_the_loop(tmp_path / "budgets.db", lambda: hooks.admit(principal, _call()))
    assert admission.reserved is not None and admission.reserved > 0


async def test_a_settlement_failing_after_the_call_was_recorded_is_logged_and_the_call_answered(
    durable: tuple[OutlayHooks, _CountingLog],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks, log = durable
    principal = await _principal(hooks)
    admission = await hooks.admit(principal, _call())

    def broken_settle(*args: Any) -> Any:
        raise BackendUnavailable("budget store disk is gone (test)")

    monkeypatch.setattr(hooks.engine.store, "settle", broken_settle)
    usage = Usage(input_tokens=1000, output_tokens=50)
    settlement = await hooks.complete(admission, Outcome(200, usage, "gpt-4o-mini", 0.2))
    assert settlement.cost is not None and settlement.cost > 0  # the caller got its answer
    assert settlement.budget_remaining is None  # unknown now: no figure rather than a wrong one
    assert settlement.budget_known is False  # so no X-Outlay-Budget-Remaining, not "unlimited"
    assert log.end_offset() == 1  # the call is in the ledger
    assert "lapses at its TTL" in caplog.text and "disk is gone" in caplog.text
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert status.reserved == admission.reserved  # the hold stands until its TTL, never lost early


def _spy_hand_offs(hooks: OutlayHooks) -> list[_Job]:
    """The jobs handed to the blocking thread from now on."""
    assert hooks._batches is not None
    handed: list[_Job] = []
    submit = hooks._batches.submit

    def spy(job: _Job, *rest: Any) -> asyncio.Future[tuple[bool, object]]:
        handed.append(job)
        return submit(job, *rest)

    hooks._batches.submit = spy  # type: ignore[method-assign,assignment]
    return handed


USAGE = Usage(input_tokens=1000, output_tokens=50)
ANSWERED = Outcome(200, USAGE, "gpt-4o-mini", 0.2)


async def _admitted(hooks: OutlayHooks) -> tuple[Admission, list[_Job]]:
    """One admitted call, and the jobs handed to the blocking thread after its admission."""
    admission = await hooks.admit(await _principal(hooks), _call())
    return admission, _spy_hand_offs(hooks)


async def test_a_completion_alone_runs_on_the_event_loop_recorded_and_settled(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    admission, handed = await _admitted(hooks)
    settlement = await hooks.complete(admission, ANSWERED)
    assert handed == []  # no hand-off to the blocking thread and back
    assert log.end_offset() == 1  # durable before complete() returned
    status = hooks.engine.status(Scope(tenant="acme"), BUDGET)
    assert (status.spent, status.reserved) == (settlement.cost, Decimal(0))


async def test_a_completion_is_handed_over_while_another_call_is_in_flight(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    principal = await _principal(hooks)
    first = await hooks.admit(principal, _call())
    second = await hooks.admit(principal, _call())
    handed = _spy_hand_offs(hooks)
    await hooks.complete(first, ANSWERED)
    assert [kind for kind, _ in handed] == ["complete"]  # the loop serves the other call meanwhile
    await hooks.complete(second, ANSWERED)
    assert [kind for kind, _ in handed] == ["complete"]  # now alone: on the loop
    assert log.end_offset() == 2
    assert hooks.engine.status(Scope(tenant="acme"), BUDGET).reserved == 0


async def test_another_process_writing_the_event_log_never_blocks_the_event_loop(
    durable: tuple[OutlayHooks, _CountingLog], tmp_path: Path
) -> None:
    hooks, log = durable
    admission, handed = await _admitted(hooks)
    events_db = tmp_path / "events.db"
    settlement = await _waits_off_the_loop(events_db, lambda: hooks.complete(admission, ANSWERED))
    assert [kind for kind, _ in handed] == ["complete"]
    assert settlement.cost is not None and log.end_offset() == 1
    assert hooks.engine.status(Scope(tenant="acme"), BUDGET).reserved == 0


async def test_a_completion_is_handed_over_while_the_budget_store_is_busy(
    durable: tuple[OutlayHooks, _CountingLog],
) -> None:
    hooks, log = durable
    admission, handed = await _admitted(hooks)
    with _store_busy(hooks):
        waiting = asyncio.ensure_future(hooks.complete(admission, ANSWERED))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert log.end_offset() == 0  # nothing was recorded on the loop before it gave up
    await waiting
    assert [kind for kind, _ in handed] == ["complete"]
    assert log.end_offset() == 1  # recorded once, by the blocking thread


async def test_a_calls_budget_hold_outlives_the_longest_call_the_gateway_allows() -> None:
    # The engine's own holds expire after 1 s; a call may last max_seconds (the gateway ends it
    # then), so its hold must live that long: expired under a long stream, it would let other
    # calls take what this one is still spending.
    now = [1_000_000.0]
    engine = BudgetEngine(InMemoryBudgetStore(clock=lambda: now[0]), reservation_ttl=1)
    with Outlay("memory://") as ol:
        hooks = OutlayHooks(InMemoryKeyStore(), outlay=ol, engine=engine, cache_ttl=0)
        principal = await _principal(hooks, budget="1.00/month")
        long_call = dataclasses.replace(_call(), max_seconds=600)
        admission = await hooks.admit(principal, long_call)
        [budget] = hooks.keys.get(principal.key_id or "").policies  # type: ignore[union-attr]
        held = engine.status(Scope(tenant="acme"), budget).reserved
        assert held > 0
        now[0] += 599  # still streaming: still held
        assert engine.status(Scope(tenant="acme"), budget).reserved == held
        now[0] += 120  # past the call's end and the margin: a hold nobody settled expires
        assert engine.status(Scope(tenant="acme"), budget).reserved == 0
        await hooks.complete(
            admission, Outcome(200, Usage(input_tokens=10, output_tokens=5), "gpt-4o-mini", 600)
        )


def _responses_call(**body: str) -> Call:
    upstream = Upstream("openai", "openai", "http://127.0.0.1:9/v1")
    request = {"model": "gpt-4o-mini", **body}
    return Call(
        "responses", "gpt-4o-mini", "gpt-4o-mini", upstream, False, request, {}, json.dumps(request).encode()
    )


async def test_a_responses_call_continuing_a_stored_conversation_holds_for_it() -> None:
    # OpenAI bills the whole stored conversation again as input: the body's size says nothing of it.
    with Outlay("memory://") as ol:
        hooks = OutlayHooks(InMemoryKeyStore(), outlay=ol, engine=BudgetEngine(), cache_ttl=0)
        principal = await _principal(hooks)
        first = await hooks.admit(principal, _responses_call(input="hi"))
        usage = Usage(input_tokens=60_000, output_tokens=1_000)
        await hooks.complete(first, Outcome(200, usage, "gpt-4o-mini", 1.0, response_id="resp_1"))
        chained = await hooks.admit(principal, _responses_call(input="go on", previous_response_id="resp_1"))
        fresh = await hooks.admit(principal, _responses_call(input="go on", previous_response_id="resp_?"))
        assert chained.reserved is not None and fresh.reserved is not None
        # at least 61,000 more input tokens at $0.15 per million (the estimate rounds input up by
        # at most 1/16); an id this process never saw: the body alone, as before
        assert (
            Decimal("0.00915") <= chained.reserved - fresh.reserved < Decimal("0.00915") * Decimal("1.0625")
        )
        for admission in (chained, fresh):
            await hooks.complete(admission, Outcome(499, None, None, 0.1))


def _call_with(headers: dict[str, str]) -> Call:
    call = _call()
    return dataclasses.replace(call, headers=headers)


async def test_decisions_recorded_off_the_call_keep_its_attribution(tmp_path: Path) -> None:
    """Refusals and soft limits decided on the loop are recorded by the blocking thread, which has
    no context of its own: the events must still carry the call's environment, feature and run."""
    log = _CountingLog(tmp_path / "events.db")
    home = Outlay(tmp_path / "outlay.db", log=log)
    soft = Budget(scope="tenant", period="month", soft="0.0000001", limit="100")
    engine = BudgetEngine(store=SQLiteBudgetStore(tmp_path / "budgets.db"), policies=[soft])
    hooks = OutlayHooks(InMemoryKeyStore(), outlay=home, engine=engine, cache_ttl=0, environment="staging")
    try:
        principal = await _principal(hooks)
        headers = {"x-outlay-feature": "search", "x-outlay-run-id": "run-2"}
        headers["x-outlay-parent-run-id"] = "run-1"
        admission = await hooks.admit(principal, _call_with(headers))
        await hooks.complete(admission, ANSWERED)  # crosses the soft limit as it settles
        strict = await _principal(hooks, budget="0.00001/day")
        with pytest.raises(BudgetExceeded):
            await hooks.admit(strict, _call_with(headers))
        await _idle(hooks)
        events = [decode_event(record.payload) for record in log.read("test-reader", 10)]
        decisions = {e.operation: e for e in events if e.operation.startswith("decision:")}
        assert set(decisions) == {"decision:soft_exceeded", "decision:denied"}
        for event in decisions.values():
            assert (event.environment, event.feature) == ("staging", "search")
            assert (event.run_id, event.parent_run_id) == ("run-2", "run-1")
    finally:
        await hooks.aclose()
        home.close()
