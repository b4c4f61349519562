"""``n`` choices are held n times: a value that is not a whole number is refused before the call.

A lax upstream (pydantic's coercion: vLLM and most self-hosted servers) serves ``"n": "5"`` as five
choices; held as one, concurrent calls could spend five times past a hard limit before any settled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from outlay._errors import InvalidInput
from outlay._runtime import Outlay
from outlay.gateway import Call, Outcome, OutlayHooks, Upstream
from outlay.keys import InMemoryKeyStore

OPENAI = Upstream("openai", "openai", "http://127.0.0.1:9/v1")
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def hooks() -> Iterator[OutlayHooks]:
    home = Outlay("memory://")
    yield OutlayHooks(InMemoryKeyStore(), outlay=home, cache_ttl=0)
    home.close()


def _call(**body: Any) -> Call:
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1_000, **body}
    return Call("chat", "gpt-4o", "gpt-4o", OPENAI, False, body, {}, json.dumps(body).encode())


async def _held(hooks: OutlayHooks, call: Call) -> Any:
    _, secret = hooks.keys.create("acme")
    principal = await hooks.authenticate({"authorization": f"Bearer {secret}"})
    admission = await hooks.admit(principal, call)
    await hooks.complete(admission, Outcome(500, None, None, 0.0))
    return admission.reserved


async def test_n_choices_are_held_n_times(hooks: OutlayHooks) -> None:
    one = await _held(hooks, _call())
    assert await _held(hooks, _call(n=1)) == pytest.approx(
        one, rel=Decimal("0.01")
    )  # (a longer body: a few tokens)
    assert await _held(hooks, _call(n=None)) == pytest.approx(one, rel=Decimal("0.01"))
    assert await _held(hooks, _call(n=5)) == pytest.approx(5 * one, rel=Decimal("0.01"))


@pytest.mark.parametrize("value", ["5", 5.0, True, 0, -2, [5], {"n": 5}])
async def test_choices_that_are_not_a_positive_whole_number_are_refused(
    hooks: OutlayHooks, value: Any
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await _held(hooks, _call(n=value))
    assert refused.value.field == "n"
    assert "positive integer" in str(refused.value)
