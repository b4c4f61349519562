"""The gateway on the Redis budget store while Redis is unreachable: a call admitted without Redis
(on_unavailable="allow") or settled while it is down is answered — never a 503 for a call made —
and carries no X-Outlay-Budget-Remaining, since what is left is not known."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from tests.budgets.redis_helpers import TcpProxy, closed_port

from outlay.budgets import BudgetEngine, RedisBudgetStore
from outlay.gateway import Gateway
from outlay.testing import FakeProvider

from .conftest import Stack, make_stack

MESSAGES = [{"role": "user", "content": "plan the quarter"}]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"outlay-test:{{{uuid.uuid4().hex}}}:"
    yield name
    cleaner = RedisBudgetStore(redis_url, prefix=name)
    cleaner.clear()
    cleaner.close()


def _stack(gateway: Gateway, fake: FakeProvider, store: RedisBudgetStore) -> Stack:
    fake.reset()
    stack = make_stack(gateway.url, engine=BudgetEngine(store))  # type: ignore[attr-defined]
    gateway.hooks = stack.hooks
    return stack


def test_fail_open_answers_calls_admitted_without_redis(
    gateway: Gateway, fake: FakeProvider, prefix: str
) -> None:
    store = RedisBudgetStore(
        f"redis://127.0.0.1:{closed_port()}/0", prefix=prefix, on_unavailable="allow", local_cap="1.00"
    )
    stack = _stack(gateway, fake, store)
    try:
        _key, secret = stack.keys.create("acme", budget="5.00/month")
        client = stack.openai(secret)
        costs = []
        for _ in range(3):  # each admitted under the local cap, none of them left held
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=100,
            )
            assert raw.status_code == 200
            assert "x-outlay-budget-remaining" not in raw.headers  # not known: not "unlimited"
            costs.append(Decimal(raw.headers["x-outlay-cost"]))
        assert len(fake.requests) == 3
        assert store.local_spend == sum(costs)  # settled, waiting for Redis; nothing left held
        assert store.pending == 3
    finally:
        stack.close()
        store.close()


def test_a_call_settled_while_redis_is_down_is_answered(
    gateway: Gateway, fake: FakeProvider, prefix: str
) -> None:
    with TcpProxy(6379) as proxy:
        store = RedisBudgetStore(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, retry_interval=0)
        stack = _stack(gateway, fake, store)
        fake.latency = 0.5
        try:
            key, secret = stack.keys.create("acme", budget="5.00/month")
            timer = threading.Timer(0.2, proxy.stop)  # admitted, then Redis goes away mid-call
            timer.start()
            raw = stack.openai(secret).chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=100,
            )
            timer.join()
            assert raw.status_code == 200  # the provider billed it: answered, not a 503
            assert "x-outlay-budget-remaining" not in raw.headers
            assert store.pending == 1  # its settle waits for Redis
            proxy.start()
            assert store.flush() == 0
            (status,) = [store.status(k.key, k.window) for k in stack.engine.reserve(
                {"tenant": "acme"}, "0", budgets=key.policies).keys]  # fmt: skip
            assert status.spent == Decimal(raw.headers["x-outlay-cost"])
        finally:
            fake.latency = 0.0
            stack.close()
            store.close()
