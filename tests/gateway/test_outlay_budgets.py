"""Budgets and faults through the gateway's real hooks: 402, 429, downgrades, releases, estimates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from outlay._money import money_str, money_sum
from outlay.budgets import Budget, BudgetEngine, CostRateLimit, RunGuards, Scope
from outlay.events import CostEvent
from outlay.gateway import Gateway, Principal
from outlay.gateway._outlay_hooks import NOT_BILLED
from outlay.keys import VirtualKey
from outlay.testing import FakeProvider, Fault, ModelBehaviour

from .conftest import Stack, make_stack, wait_for

MESSAGES = [{"role": "user", "content": "plan the quarter"}]


@pytest.fixture
def build(gateway: Gateway, fake: FakeProvider) -> Iterator[object]:
    made: list[Stack] = []

    def factory(**options: object) -> Stack:
        fake.reset()
        stack = make_stack(gateway.url, **options)  # type: ignore[attr-defined]
        gateway.hooks = stack.hooks
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        stack.close()


def _calls(stack: Stack) -> list[CostEvent]:
    """Call events only (budget decisions are recorded as zero-cost events beside them)."""
    return [e for e in stack.events() if not e.operation.startswith("decision:")]


def _prespend(stack: Stack, key: VirtualKey, amount: str, policy: int = 0) -> None:
    budget = key.policies[policy]
    scope = (
        Scope(tenant=key.tenant) if budget.scope == "tenant"
        else Scope(tenant=key.tenant, feature=key.feature_key)
    )  # fmt: skip
    stack.engine.settle(stack.engine.reserve(scope, amount, budgets=[budget]), amount)


def _spent(stack: Stack, key: VirtualKey, policy: int = 0) -> tuple[Decimal, Decimal]:
    budget = key.policies[policy]
    scope = (
        Scope(tenant=key.tenant) if budget.scope == "tenant"
        else Scope(tenant=key.tenant, feature=key.feature_key)
    )  # fmt: skip
    status = stack.engine.status(scope, budget)
    return status.spent, status.reserved


def test_hard_limit_is_402_with_scope_limit_and_spent_in_both_formats(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    key, secret = stack.keys.create("acme", budget="1.00/month")
    _prespend(stack, key, "0.9999")
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai(secret).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    details = caught.value.response.json()["error"]["outlay"]
    assert (details["scope"], details["limit"], details["spent"]) == ("tenant", "1", "0.9999")
    assert caught.value.response.headers["x-outlay-budget-remaining"] == "0.0001"
    with pytest.raises(anthropic.APIStatusError) as refused:
        stack.anthropic(secret).messages.create(model="claude-haiku-4-5", max_tokens=1000, messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert error["type"] == "billing_error"
    assert error["outlay"]["limit"] == "1"
    assert "$0.9999" in error["message"]
    assert fake.requests == []
    assert _calls(stack) == []
    denied = [e for e in stack.events() if e.operation == "decision:denied"]
    assert len(denied) == 2 and all(e.tenant_id == "acme" for e in denied)
    # The refusal is the budget's, not the tenant's: its other (unbudgeted) key still works.
    assert stack.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_a_feature_budget_is_per_tenant(build) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    acme, acme_secret = stack.keys.create("acme", feature="chat", budget="1/month")
    _, globex_secret = stack.keys.create("globex", feature="chat", budget="1/month")
    _prespend(stack, acme, "0.9999", policy=1)
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai(acme_secret).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
    assert caught.value.response.json()["error"]["outlay"]["scope"] == "feature"
    globex = stack.openai(globex_secret)
    assert globex.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000).choices  # type: ignore[arg-type]
    assert _spent(stack, acme, policy=0) == (0, 0)  # the refused call left no hold on the tenant counter


def test_no_tenant_spends_or_reads_a_keys_feature_budget_by_naming_its_counter() -> None:
    """A shared cap keeps its counter by the feature id alone; a key's feature budget must not be on
    that counter, or tenant evil naming the feature "acme/chat" in a header spends acme's budget."""
    shared = Budget("100", scope="feature", shared=True, name="platform cap per feature")
    stack = make_stack("http://unused", engine=BudgetEngine(policies=[shared]))
    try:
        acme, _ = stack.keys.create("acme", feature="chat", budget="1/month")
        evil, _ = stack.keys.create("evil")
        hooks = stack.hooks
        for key, headers in ((evil, {"x-outlay-feature": "acme/chat"}), (acme, {})):
            principal = hooks_principal(key)
            ctx = hooks._context(principal, key, headers)
            (hold,) = hooks._reserve(Scope.of(ctx), key, Decimal("0.75"), "gpt-4o", None, 60)
            stack.engine.settle(hold, "0.75")
        # acme's feature budget holds acme's 0.75 only, not evil's: a second call of 0.25 fits
        assert _spent(stack, acme, policy=1) == (Decimal("0.75"), 0)
        ctx = hooks._context(hooks_principal(acme), acme, {})
        hooks._reserve(Scope.of(ctx), acme, Decimal("0.25"), "gpt-4o", None, 60)
        # and evil's shared counter holds evil's spend only: acme's is not on it
        status = stack.engine.status(Scope(tenant="evil", feature="acme/chat"), shared)
        assert status.spent == Decimal("0.75")
    finally:
        stack.close()


def test_a_shared_budget_tells_no_tenant_what_the_others_spent(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    cap = Budget("0.0005", scope="feature", shared=True, name="platform cap")
    stack = build(engine=BudgetEngine(policies=[cap]))
    _, globex_secret = stack.keys.create("globex")
    stack.engine.settle(stack.engine.reserve(Scope(tenant="acme", feature="search"), "0.0004"), "0.0004")
    globex = stack.openai(globex_secret, **{"X-Outlay-Feature": "search"})
    # Admitted: X-Outlay-Budget-Remaining leaves the shared cap out (it would tell acme's 0.0004).
    create = globex.chat.completions.with_raw_response.create
    raw = create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert raw.headers["x-outlay-budget-remaining"] == "unlimited"  # (globex has no limit of its own)
    with pytest.raises(openai.APIStatusError) as caught:
        globex.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    details = caught.value.response.json()["error"]["outlay"]
    assert details["shared"] is True and "spent" not in details and "reserved" not in details
    assert "x-outlay-budget-remaining" not in caught.value.response.headers
    assert "0.0004" not in caught.value.message and "spent" not in caught.value.message
    # The refusal is recorded under globex, whose token reads its decisions: no spend in it either.
    (denied,) = [e for e in stack.events() if e.operation == "decision:denied"]
    assert denied.tenant_id == "globex"
    assert "spent" not in denied.labels and "reserved" not in denied.labels


def hooks_principal(key: VirtualKey) -> Principal:
    return Principal(key.tenant, key_id=key.id, workspace_id=key.workspace, policies={"key": key})


def test_soft_limit_downgrades_and_the_response_says_so(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    soft = Budget(soft="0.0001", scope="tenant", downgrade={"gpt-4o": "gpt-4o-mini"})
    stack = build(engine=BudgetEngine(policies=[soft]))
    stack.engine.settle(stack.engine.reserve(Scope(tenant="acme"), "0.0002"), "0.0002")
    raw = stack.openai().chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-outlay-model-downgraded"] == "gpt-4o -> gpt-4o-mini"
    assert fake.requests[-1].json()["model"] == "gpt-4o-mini"
    (event,) = _calls(stack)
    assert event.model == "gpt-4o-mini"
    assert event.labels["gateway.requested_model"] == "gpt-4o"
    downgrades = [e for e in stack.events() if e.operation == "decision:downgraded"]
    assert len(downgrades) == 1
    assert downgrades[0].labels["downgraded_to"] == "gpt-4o-mini"


def test_cost_rate_is_429_with_retry_after(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    stack = build(engine=BudgetEngine(rate_limit=CostRateLimit("0.000001", per=3600)))
    client = stack.anthropic()
    client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(fake.requests) == 1


def test_a_budgets_file_run_guard_stops_a_run_named_in_a_header(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    # The run policy's limit applied to X-Outlay-Run-Id runs, but its guards were never checked:
    # an agent looping through the gateway on the same request was never stopped.
    guarded = Budget("10", scope="run", guards=RunGuards(max_calls=3, max_identical_calls=2))
    stack = build(engine=BudgetEngine(policies=[guarded]))
    client = stack.openai(**{"X-Outlay-Run-Id": "loop-1"})
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "run_stopped"  # type: ignore[index]
    assert len(fake.requests) == 2
    other = stack.openai(stack.keys.create("globex")[1], **{"X-Outlay-Run-Id": "loop-1"})
    other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(fake.requests) == 3  # another tenant's run of that id is its own


def test_upstream_500_releases_the_hold_and_records_an_unbilled_error(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    key, secret = stack.keys.create("acme", budget="5/month")
    fake.fail(Fault.error(500))
    with pytest.raises(openai.InternalServerError) as caught:
        stack.openai(secret).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["x-outlay-cost"] == "0"
    assert _spent(stack, key) == (0, 0)
    (event,) = _calls(stack)
    assert (event.status, event.priced, event.cost, event.price_version) == ("error", True, 0, NOT_BILLED)
    assert event.labels["gateway.status"] == "500"


def test_timeout_bills_the_estimate_flagged_as_such(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    key, secret = stack.keys.create("acme", budget="5/month")
    fake.fail(Fault.hang())
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai(secret).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    (event,) = _calls(stack)
    assert event.status == "estimated"
    assert event.priced and event.cost is not None and event.cost > 0
    assert "gateway.estimate" in event.labels
    assert caught.value.response.headers["x-outlay-cost"] == money_str(event.cost)
    assert _spent(stack, key) == (event.cost, 0)  # unknown is charged, never zero


def test_client_gone_mid_stream_bills_at_least_what_was_reported(build, fake: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    fake.chunk_delay = 0.2
    try:
        with stack.anthropic().messages.stream(
            model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES
        ) as s:  # type: ignore[arg-type]
            next(iter(s))  # message_start (with the input usage) arrived; then the client walks away
        wait_for(lambda: len(_calls(stack)) == 1)
    finally:
        fake.chunk_delay = 0.0
    (event,) = _calls(stack)
    assert event.status == "estimated"
    assert event.usage.input_tokens > 0
    assert not event.usage.complete
    assert event.usage.reason and "disconnected" in event.usage.reason
    assert event.cost is not None
    assert event.cost >= money_sum(event.cost_breakdown.values()) > 0
    assert event.labels["gateway.status"] == "499"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", b"{oops", 400),
        ("/v1/messages", b'{"model": "claude-haiku-4-5", "max_tokens": "lots", "messages": []}', 400),
        ("/v1/chat/completions", b'{"model": "gpt-4o-mini", "max_tokens": -1, "messages": []}', 400),
        ("/v1/chat/completions", b'{"model": "no-such-model", "messages": []}', 404),
        ("/v1/chat/completions", b'{"model": "gpt-4o-mini", "pad": "' + b"x" * 70_000 + b'"}', 413),
    ],
)
def test_bad_input_is_a_4xx_never_a_5xx(
    build, fake: FakeProvider, path: str, body: bytes, status: int
) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    response = httpx.post(
        stack.url + path,
        content=body,
        headers={"x-api-key": stack.secret, "content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"]
    assert fake.requests == []
    assert _calls(stack) == []


async def test_64_concurrent_streams_against_one_hard_limit_never_overshoot(build) -> None:  # type: ignore[no-untyped-def]
    stack = build()
    limit = Decimal("0.006")
    key, secret = stack.keys.create("acme", budget=f"{limit}/month")
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0, timeout=30)

    async def one() -> int:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=1000,  # the worst case reserved: ~0.0006 each, about ten fit the limit
                stream=True,
            )
            async for _ in stream:
                pass
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    statuses = await asyncio.gather(*(one() for _ in range(64)))
    await client.close()
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 402}
    await asyncio.to_thread(wait_for, lambda: len(_calls(stack)) == admitted)
    events = _calls(stack)
    recorded = money_sum(e.cost for e in events if e.cost is not None)
    assert all(e.status == "ok" and e.priced for e in events)
    # The measurement: the sum of what was recorded against the limit. The gateway reserves the
    # worst case (every max_tokens), so actual <= estimate and the overshoot is exactly zero.
    assert recorded <= limit
    assert admitted >= 9  # no call was refused while ten worst cases still fitted
    assert admitted < 64
    assert _spent(stack, key) == (recorded, 0)  # the budget saw exactly what the ledger saw


async def _uncapped_streams(stack: Stack, fake: FakeProvider, limit: Decimal) -> tuple[list[int], Decimal]:
    """10 concurrent gpt-4o streams without an output limit, each answering 8,000 tokens when let."""
    key, secret = stack.keys.create("acme", budget=f"{limit}/month")
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0, timeout=30)
    fake.behaviours["gpt-4o"] = ModelBehaviour(output_tokens=8000)

    async def one() -> int:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            )
            async for _ in stream:
                pass
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    try:
        statuses = await asyncio.gather(*(one() for _ in range(10)))
    finally:
        del fake.behaviours["gpt-4o"]
        await client.close()
    admitted = statuses.count(200)
    await asyncio.to_thread(wait_for, lambda: len(_calls(stack)) == admitted)
    recorded = money_sum(e.cost for e in _calls(stack) if e.cost is not None)
    assert _spent(stack, key) == (recorded, 0)
    return statuses, recorded


async def test_without_an_output_limit_a_hard_limit_is_overshot_unless_cap_output(
    build, fake: FakeProvider
) -> None:  # type: ignore[no-untyped-def]
    limit = Decimal("0.05")
    # As documented: the hold assumes default_output_tokens, and a longer answer is charged in full.
    statuses, recorded = await _uncapped_streams(build(), fake, limit)
    assert recorded > limit  # one such call alone (8,000 tokens, 0.08 USD) is past it
    # cap_output: the request goes upstream with the limit its hold assumed, so it cannot cost more.
    stack = build(cap_output=True)
    statuses, recorded = await _uncapped_streams(stack, fake, limit)
    assert 0 < recorded <= limit
    assert set(statuses) <= {200, 402} and statuses.count(200) >= 2
    sent = [r.json() for r in fake.requests if r.path.endswith("/chat/completions")]
    assert sent and all(body["max_completion_tokens"] == 1024 for body in sent)
    assert all(e.usage.output_tokens == 1024 for e in _calls(stack))


def test_cap_output_leaves_a_given_limit_alone_and_covers_the_responses_api(
    build, fake: FakeProvider
) -> None:  # type: ignore[no-untyped-def]
    stack = build(cap_output=True, default_output_tokens=300)
    client = stack.openai(stack.secret)
    given = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
    )  # type: ignore[arg-type]
    capped = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, n=2)  # type: ignore[arg-type]
    assert "x-outlay-output-limit" not in given.headers
    assert capped.headers["x-outlay-output-limit"] == "300"
    client.responses.create(model="gpt-4o-mini", input="price this")
    client.embeddings.create(model="text-embedding-3-small", input="x")
    chat_given, chat_none, responses, embeddings = (r.json() for r in fake.requests)
    assert chat_given["max_tokens"] == 50 and "max_completion_tokens" not in chat_given
    assert chat_none["max_completion_tokens"] == 300  # per choice: the hold is 2 x 300
    assert responses["max_output_tokens"] == 300
    assert "max_completion_tokens" not in embeddings and "max_output_tokens" not in embeddings
