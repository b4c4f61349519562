"""A stream left unclosed is closed by the garbage collector, at whatever allocation triggers a
collection -- possibly inside outlay's own recording on the same thread (a lock held, a transaction
open). Recording it there deadlocked the event log's group commit or failed in a budget store's
transaction, and the hold was never settled."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import openai

import outlay
from outlay.budgets import Budget, BudgetEngine, InMemoryBudgetStore
from outlay.instrument import async_openai_client, openai_client

from .conftest import events

HELLO: Any = [{"role": "user", "content": "Say hello to the metering transport, please."}]


class _NotReentrant:
    """The store's lock, failing after a while where the real one would wait for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=2):
            raise RuntimeError("the budget store was re-entered by its own thread")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _CollectingStore(InMemoryBudgetStore):
    """A store in which a garbage collection happens while its lock is held (any allocation may
    trigger one; this one does it on purpose)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = _NotReentrant()  # type: ignore[assignment]

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            gc.collect()
        return super().reserve(*args, **kwargs)


def test_a_stream_closed_by_the_garbage_collector_is_recorded_and_settled(
    base_url: str, pipeline: outlay.Outlay
) -> None:
    engine = BudgetEngine(_CollectingStore())
    budget = Budget(scope="tenant", period="month", limit="10")
    engine.add_policy(budget)
    with (
        openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k") as client,
        outlay.attribute(tenant="acme"),
    ):
        stream: openai.Stream[Any] | None = client.chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=50, stream=True
        )
        assert stream is not None
        next(iter(stream))
        stream = None  # abandoned, unclosed: the SDK's stream is in a reference cycle
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)  # collects it
    deadline = time.monotonic() + 5
    while engine.status({"tenant": "acme"}, budget).reserved and time.monotonic() < deadline:
        time.sleep(0.01)
    status = engine.status({"tenant": "acme"}, budget)
    assert status.reserved == 0 and status.spent > 0
    abandoned, answered = sorted(events(pipeline), key=lambda e: e.usage.complete)
    assert not abandoned.usage.complete and abandoned.cost is None and abandoned.tenant_id == "acme"
    assert answered.usage.complete and answered.cost


def _settled(engine: BudgetEngine, budget: Budget, tenant: str) -> bool:
    deadline = time.monotonic() + 5
    while engine.status({"tenant": tenant}, budget).reserved and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return not engine.status({"tenant": tenant}, budget).reserved


def test_a_stream_dropped_before_it_was_read_is_recorded_and_settled(
    base_url: str, pipeline: outlay.Outlay
) -> None:
    # create(stream=True) and nothing after it: no generator of the SDK's ever ran, so nothing
    # closed the response -- the call the provider billed was missing from the ledger for good.
    engine = BudgetEngine(InMemoryBudgetStore())
    budget = Budget(scope="tenant", period="month", limit="10")
    engine.add_policy(budget)
    with (
        openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k") as client,
        outlay.attribute(tenant="acme"),
    ):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=50, stream=True)
        assert _settled(engine, budget, "acme")
    status = engine.status({"tenant": "acme"}, budget)
    assert status.spent > 0  # the estimate: never zero
    [event] = events(pipeline)
    assert not event.usage.complete and event.cost is None and event.tenant_id == "acme"


async def test_an_async_stream_dropped_before_it_was_read_is_recorded_and_settled(
    base_url: str, pipeline: outlay.Outlay
) -> None:
    engine = BudgetEngine(InMemoryBudgetStore())
    budget = Budget(scope="tenant", period="month", limit="10")
    engine.add_policy(budget)
    client = async_openai_client(outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="k")
    async with client:
        with outlay.attribute(tenant="acme"):
            await client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=50, stream=True)
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HELLO, max_tokens=50, stream=True
            )
            del raw
        deadline = time.monotonic() + 5
        while engine.status({"tenant": "acme"}, budget).reserved and time.monotonic() < deadline:
            gc.collect()
            await asyncio.sleep(0.01)
    status = engine.status({"tenant": "acme"}, budget)
    assert status.reserved == 0 and status.spent > 0
    recorded = events(pipeline)
    assert [(e.usage.complete, e.cost, e.tenant_id) for e in recorded] == [(False, None, "acme")] * 2
