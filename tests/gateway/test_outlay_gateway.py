"""The gateway with its real hooks: virtual keys, attribution within a tenant, exact costs in the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

import outlay.pricing as pricing
from outlay._money import money_str
from outlay._runtime import Outlay
from outlay._usage import Usage
from outlay.budgets import BudgetEngine
from outlay.context import CostContext, inject
from outlay.events import CostEvent
from outlay.gateway import Gateway, OutlayHooks
from outlay.keys import InMemoryKeyStore
from outlay.testing import FakeProvider, ModelBehaviour, count_input_tokens

from .conftest import Stack

MESSAGES = [{"role": "user", "content": "What did tenant acme spend on agents last quarter?"}]


def _only(stack: Stack) -> CostEvent:
    events = stack.wait_events(1)
    assert len(events) == 1, events
    return events[0]


def _rated(provider: str, model: str, usage: Usage) -> Decimal:
    cost = pricing.rate(usage, provider=provider, model=model).cost
    assert cost is not None and cost > 0
    return cost


# -- keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "olk_not-a-key", "sk-" + "x" * 600])
def test_missing_or_unknown_key_is_401_in_both_formats(stack: Stack, secret: str | None) -> None:
    headers = {} if secret is None else {"authorization": f"Bearer {secret}"}
    chat = httpx.post(stack.url + "/v1/chat/completions", headers=headers, json={"model": "gpt-4o-mini"})
    assert chat.status_code == 401
    assert chat.json()["error"]["code"] == "invalid_api_key"
    message = httpx.post(
        stack.url + "/v1/messages",
        headers={} if secret is None else {"x-api-key": secret},
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MESSAGES},
    )
    assert message.status_code == 401
    assert message.json()["type"] == "error"
    assert message.json()["error"]["type"] == "authentication_error"
    assert stack.events() == []


def test_revoked_key_is_401_for_the_sdks(stack: Stack) -> None:
    client = stack.openai()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    stack.keys.revoke(stack.key.id)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert "revoked" in caught.value.message
    with pytest.raises(anthropic.AuthenticationError):
        stack.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert len(stack.events()) == 1  # only the call made before the revocation


def test_the_client_key_never_reaches_the_upstream(stack: Stack, fake: FakeProvider) -> None:
    stack.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    forwarded = fake.requests[-1].headers
    assert stack.secret not in str(dict(forwarded))


def test_count_tokens_and_model_lookups_are_free_and_need_a_live_key(
    stack: Stack, fake: FakeProvider
) -> None:
    counted = stack.anthropic().messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES)  # type: ignore[arg-type]
    assert counted.input_tokens == count_input_tokens({"messages": MESSAGES})
    assert stack.openai().models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert stack.anthropic().models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"
    assert all(stack.secret not in str(dict(r.headers)) for r in fake.requests)
    stack.outlay.flush()
    assert stack.events() == []  # the provider bills none of them: no cost event, no hold
    stack.keys.revoke(stack.key.id)
    with pytest.raises(anthropic.AuthenticationError):
        stack.anthropic().messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError):
        stack.openai().models.retrieve("gpt-4o-mini")


# -- attribution ------------------------------------------------------------------------------------


def _baggage(**fields: str) -> str:
    carrier: dict[str, str] = {}
    inject(carrier, context=CostContext(**fields))  # type: ignore[arg-type]
    return carrier["baggage"]


def test_attribution_from_baggage_and_headers_lands_in_the_ledger(stack: Stack) -> None:
    baggage = _baggage(tenant="acme", feature="search", user="u-7", run_id="run-1", run_name="planner")
    client = stack.openai(baggage=baggage, **{"X-Outlay-Workflow-Id": "nightly"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    event = _only(stack)
    assert (event.tenant_id, event.feature, event.user_id) == ("acme", "search", "u-7")
    assert (event.run_id, event.agent, event.workflow_id) == ("run-1", "planner", "nightly")
    assert event.labels["gateway.key"] == stack.key.id
    rows = stack.outlay.reports().breakdown(("tenant", "feature"), "2000-01-01", "2100-01-01")
    assert [(r["tenant"], r["feature"], r["events"]) for r in rows] == [("acme", "search", 1)]


def test_a_client_cannot_forge_the_gateways_own_labels(stack: Stack) -> None:
    carrier: dict[str, str] = {}
    forged = {"gateway.status": "499", "gateway.requested_model": "gpt-4o", "gateway.error": "x", "team": "a"}
    inject(carrier, context=CostContext(tenant="acme", labels=forged))
    stack.openai(baggage=carrier["baggage"]).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert dict(_only(stack).labels) == {"team": "a", "gateway.key": stack.key.id}


def test_a_callers_run_ancestry_reaches_the_ledger_so_its_silent_runs_stay_linked(stack: Stack) -> None:
    baggage = _baggage(
        tenant="acme", run_id="agent", parent_run_id="planner", root_run_id="job", run_path=("job", "planner")
    )
    stack.openai(baggage=baggage).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert _only(stack).run_path == ("job", "planner")
    tree = stack.outlay.reports().run_tree("job")
    assert [c["run_id"] for c in tree["children"]] == ["planner"]
    # An X-Outlay-* header that moves the call to another parent drops the baggage's ancestry.
    client = stack.openai(baggage=baggage, **{"X-Outlay-Parent-Run-Id": "elsewhere"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    moved = [e for e in stack.events() if e.parent_run_id == "elsewhere"]
    assert len(moved) == 1 and moved[0].run_path == ()


@pytest.mark.parametrize(
    "headers",
    [
        {"baggage": _baggage(tenant="globex")},
        {"X-Outlay-Tenant": "globex"},
        {"baggage": _baggage(tenant="acme"), "X-Outlay-Tenant": "globex"},
    ],
)
def test_forged_tenant_is_403_and_nothing_is_forwarded_or_recorded(
    stack: Stack, fake: FakeProvider, headers: dict[str, str]
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        stack.openai(**headers).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert "globex" in caught.value.message
    assert caught.value.response.json()["error"]["code"] == "forged_attribution"
    with pytest.raises(anthropic.PermissionDeniedError):
        stack.anthropic(**headers).messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert fake.requests == []
    assert stack.events() == []


def test_a_key_bound_to_a_feature_wins_and_refuses_another(stack: Stack) -> None:
    _, secret = stack.keys.create("acme", feature="chat")
    stack.openai(secret).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert _only(stack).feature == "chat"
    with pytest.raises(openai.PermissionDeniedError):
        stack.openai(secret, **{"X-Outlay-Feature": "search"}).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "headers",
    [{"X-Outlay-Environment": "development"}, {"baggage": _baggage(tenant="acme", environment="test")}],
)
def test_a_tenant_cannot_move_its_calls_out_of_the_gateways_environment(
    stack: Stack, fake: FakeProvider, headers: dict[str, str]
) -> None:
    # "development" would take the calls off the tenant's production invoice and margins.
    with pytest.raises(openai.PermissionDeniedError) as caught:
        stack.openai(**headers).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.json()["error"]["code"] == "forged_attribution"
    assert fake.requests == []
    assert stack.events() == []
    # Naming the gateway's own environment is no claim against it.
    stack.openai(**{"X-Outlay-Environment": "production"}).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert _only(stack).environment == "production"


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"baggage": "not baggage at all"}, "baggage"),
        ({"X-Outlay-Environment": "moon"}, "environment"),
        ({"X-Outlay-User": "u" * 300}, "user"),
    ],
)
def test_malformed_attribution_is_a_400_naming_it(stack: Stack, headers: dict[str, str], needle: str) -> None:
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {stack.secret}", **headers},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        ({"note": "x" * 1025}, "values must be at most 1024 characters"),
        ({"has%20space": "v"}, "keys must be names"),
    ],
)
def test_labels_out_of_bounds_are_a_400_and_nothing_goes_upstream(
    stack: Stack, fake: FakeProvider, labels: dict[str, str], needle: str
) -> None:
    # What a tenant puts in its baggage lands in every event: refused before the call is made (and
    # billed), never found out while recording it.
    members = ",".join(f"outlay.l.{k}={v}" for k, v in labels.items())
    for client, create in (
        (stack.openai(baggage=members), "chat"),
        (stack.anthropic(baggage=members), "messages"),
    ):
        with pytest.raises((openai.BadRequestError, anthropic.BadRequestError)) as caught:
            if create == "chat":
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[union-attr,arg-type]
            else:
                client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[union-attr,arg-type]
        assert needle in str(caught.value) and "labels" in str(caught.value)
    assert fake.requests == []
    assert stack.events() == []


def test_non_ascii_attribution_headers_are_read_as_utf8(stack: Stack) -> None:
    # Clients send header text as UTF-8; the server hands it over as latin-1. Read as latin-1,
    # "café" was recorded as "cafÃ©", and a key's own non-ASCII tenant was refused as forged (403).
    key, secret = stack.keys.create("ünï→💸")
    for name, value, key_secret in (
        ("X-Outlay-Feature", "café", stack.secret),
        ("X-Outlay-Tenant", key.tenant, secret),
    ):
        response = httpx.post(
            stack.url + "/v1/chat/completions",
            headers={b"authorization": f"Bearer {key_secret}".encode(), name.encode(): value.encode()},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
        assert response.status_code == 200, response.text
    events = stack.wait_events(2)
    assert sorted((e.tenant_id, e.feature) for e in events) == [("acme", "café"), ("ünï→💸", None)]
    latin1 = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={
            b"authorization": f"Bearer {stack.secret}".encode(),
            b"X-Outlay-Feature": "café".encode("latin-1"),
        },
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert latin1.status_code == 400
    assert "x-outlay-feature" in latin1.json()["error"]["message"]


# -- exact costs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_chat_cost_is_exact_and_in_the_header(stack: Stack, stream: bool) -> None:
    client = stack.openai()
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ) as raw:
            assert raw.headers["x-outlay-cost-reserved"]
            list(raw.iter_lines())
    else:
        raw_answer = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        completion = raw_answer.parse()
        assert completion.usage is not None
    event = _only(stack)
    usage = Usage(input_tokens=count_input_tokens({"messages": MESSAGES}), output_tokens=16)
    assert event.usage == usage
    assert (event.status, event.priced, event.provider, event.model) == ("ok", True, "openai", "gpt-4o-mini")
    assert event.cost == _rated("openai", "gpt-4o-mini", usage)
    if not stream:
        assert raw_answer.headers["x-outlay-cost"] == money_str(event.cost)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_cost_is_exact(stack: Stack, stream: bool) -> None:
    client = stack.openai()
    if stream:
        with client.responses.stream(model="gpt-4o-mini", input="price this") as events:
            final = events.get_final_response()
    else:
        final = client.responses.create(model="gpt-4o-mini", input="price this")
    assert final.usage is not None
    event = _only(stack)
    usage = Usage(input_tokens=final.usage.input_tokens, output_tokens=final.usage.output_tokens)
    assert event.usage == usage
    assert event.cost == _rated("openai", "gpt-4o-mini", usage)


def test_embeddings_cost_is_exact(stack: Stack) -> None:
    result = stack.openai().embeddings.create(model="text-embedding-3-small", input=["a b c d", "e f"])
    event = _only(stack)
    assert event.operation == "embedding"
    assert event.usage == Usage(input_tokens=result.usage.prompt_tokens)
    assert event.cost == _rated("openai", "text-embedding-3-small", event.usage)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_cost_is_exact_cache_included(stack: Stack, stream: bool) -> None:
    client = stack.anthropic()
    if stream:
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=40, messages=MESSAGES) as events:  # type: ignore[arg-type]
            message = events.get_final_message()
    else:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=40, messages=MESSAGES)  # type: ignore[arg-type]
    reported = message.usage
    read, write = reported.cache_read_input_tokens or 0, reported.cache_creation_input_tokens or 0
    usage = Usage(
        input_tokens=reported.input_tokens + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        output_tokens=reported.output_tokens,
    )
    assert read and write  # the fake's claude behaviour caches: the split is exercised
    event = _only(stack)
    assert event.usage == usage
    assert (event.provider, event.model) == ("anthropic", "claude-haiku-4-5")
    assert event.cost == _rated("anthropic", "claude-haiku-4-5", usage)


def test_unpriced_model_is_recorded_unpriced_and_charged_the_fallback(stack: Stack) -> None:
    stack.openai().chat.completions.create(model="llama-3-70b", messages=MESSAGES)  # type: ignore[arg-type]
    event = _only(stack)
    assert (event.provider, event.priced, event.cost) == ("local", False, None)
    assert event.unpriced_reason and "llama-3-70b" in event.unpriced_reason


# -- durability ---------------------------------------------------------------------------------------


def test_event_is_durable_before_a_non_streamed_answer_and_survives_shutdown(
    gateway: Gateway, fake: FakeProvider, tmp_path: Path
) -> None:
    fake.reset()
    home = Outlay(tmp_path / "outlay.db")  # SQLite event log: appends run on the hooks' thread pool
    store = InMemoryKeyStore()
    _, secret = store.create("acme")
    hooks = OutlayHooks(store, outlay=home, engine=BudgetEngine(), cache_ttl=0)
    assert hooks._batches is not None  # offloaded to the blocking thread
    gateway.hooks = hooks
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)  # type: ignore[attr-defined]
    before = home.log.end_offset()
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert home.log.end_offset() == before + 1  # committed before the client had its answer
        before += 1
    client.close()
    home.close()
    reopened = Outlay(tmp_path / "outlay.db")
    totals = reopened.reports().breakdown(("tenant",), "2000-01-01", "2100-01-01")
    assert totals[0]["tenant"] == "acme"
    assert totals[0]["events"] == 3
    reopened.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_priority_call_through_the_gateway_costs_the_priority_price(stack: Stack, stream: bool) -> None:
    client = stack.openai()
    if stream:
        chunks = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            service_tier="priority",
        )
        list(chunks)
    else:
        raw_answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            service_tier="priority",
        )
        raw_answer.parse()
    event = _only(stack)
    usage = Usage(
        input_tokens=count_input_tokens({"messages": MESSAGES}), output_tokens=16, service_tier="priority"
    )
    assert event.usage == usage
    # gpt-4o priority: $4.25 / $17 per million tokens (standard: $2.50 / $10)
    assert event.cost == (Decimal("4.25") * usage.input_tokens + Decimal(17) * 16) / 1_000_000
    assert event.price_version == "genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority"
    if not stream:
        assert raw_answer.headers["x-outlay-cost"] == money_str(event.cost)


GEMINI_TTS = "gemini-3.8-flash-tts"  # genai-prices 0.2.3 prices its Gemini API tiers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("sent", "tier", "per_in", "per_out", "version"),
    [
        # $0.90 / $16.20 per million until 2027 (standard: $0.50 / $9)
        (
            "priority",
            "priority",
            "0.9",
            "16.2",
            f"genai-prices@0.2.3:google/{GEMINI_TTS}@2026-10-15#priority",
        ),
        (None, None, "0.5", "9", f"genai-prices@0.2.3:google/{GEMINI_TTS}"),
        ("PRIORITY!", None, "0.5", "9", f"genai-prices@0.2.3:google/{GEMINI_TTS}"),
    ],
    ids=["priority", "standard", "garbage"],
)
def test_a_gemini_call_is_rated_at_the_tier_its_header_names(
    stack: Stack,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
    sent: str | None,
    tier: str | None,
    per_in: str,
    per_out: str,
    version: str,
) -> None:
    # Gemini's OpenAI-compatible endpoint: no service_tier in the body, the tier in x-gemini-service-tier.
    behaviour = ModelBehaviour(service_tier=sent, gemini_tier_as="header")
    monkeypatch.setitem(fake.behaviours, GEMINI_TTS, behaviour)
    client = stack.openai()
    if stream:
        list(client.chat.completions.create(model=GEMINI_TTS, messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    else:
        raw = client.chat.completions.with_raw_response.create(model=GEMINI_TTS, messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.parse().service_tier is None
    assert fake.requests[-1].path == "/v1beta/openai/chat/completions"
    event = _only(stack)
    usage = Usage(
        input_tokens=count_input_tokens({"messages": MESSAGES}), output_tokens=16, service_tier=tier
    )
    assert event.provider == "google" and event.usage == usage
    assert event.cost == (Decimal(per_in) * usage.input_tokens + Decimal(per_out) * 16) / 1_000_000
    assert event.price_version == version


def test_a_clients_labels_leave_room_for_the_gateways_so_its_events_can_be_sent_again(
    stack: Stack, fake: FakeProvider
) -> None:
    # The gateway adds its own gateway.* labels to a call's event; a client's labels must leave them
    # room within the bound every entry point keeps, or an exported event re-sent to the ingest API
    # would be refused. One label too many is a 400 before anything goes upstream; forged gateway.*
    # labels are dropped, so they take no room.
    from outlay.context._context import MAX_LABELS, check_labels
    from outlay.gateway._attribution import CLIENT_LABELS

    def members(count: int) -> str:
        return ",".join(f"outlay.l.k{i}=v" for i in range(count))

    with pytest.raises(openai.BadRequestError) as caught:
        stack.openai(baggage=members(CLIENT_LABELS + 1)).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert f"at most {CLIENT_LABELS} labels through the gateway" in str(caught.value)
    assert fake.requests == [] and stack.events() == []
    forged = ",outlay.l.gateway.status=499,outlay.l.gateway.key=mine"
    stack.openai(baggage=members(CLIENT_LABELS) + forged).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    labels = _only(stack).labels
    assert len(labels) == CLIENT_LABELS + 1 <= MAX_LABELS
    assert labels["gateway.key"] == stack.key.id and "gateway.status" not in labels
    check_labels(labels)  # what the ingest API and record() take


def test_every_label_the_gateway_sets_is_counted_in_the_room_it_keeps() -> None:
    # CLIENT_LABELS is MAX_LABELS less the gateway's own labels: a new gateway.* label set anywhere
    # in the gateway without being counted would let its events exceed the bound again.
    import re
    from pathlib import Path

    import outlay.gateway
    from outlay.gateway._attribution import GATEWAY_LABELS

    source = "".join(path.read_text() for path in Path(outlay.gateway.__file__).parent.glob("*.py"))
    assert set(re.findall(r'labels\["(gateway\.[a-z_]+)"\]', source)) <= set(GATEWAY_LABELS)


def test_a_key_looping_on_the_free_routes_gets_a_429_and_the_others_do_not(fake: FakeProvider) -> None:
    # Model lookups and token counts are free and unrecorded, so no cost limit slows them, but each
    # is a request on the operator's upstream credential: a key looping on them would take the rate
    # limit every other tenant's calls need. 60 a minute: bursts of 10, then one a second.
    from outlay.testing import LiveServer

    from .conftest import gateway_config, make_stack

    app = Gateway(gateway_config(fake.url, free_requests_per_minute=60), trust_env=False)
    with LiveServer(app, lifespan="on") as server:
        stack = make_stack(server.url)
        app.hooks = stack.hooks
        try:
            fake.reset()
            _, other = stack.keys.create("globex")
            looping = stack.openai()
            for _ in range(10):
                looping.models.retrieve("gpt-4o-mini")
            with pytest.raises(openai.RateLimitError) as caught:
                looping.models.list()
            assert caught.value.response.headers["retry-after"] == "1"
            assert "more than 60 requests a minute to the free routes" in str(caught.value)
            with pytest.raises(anthropic.RateLimitError):
                stack.anthropic().messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES)  # type: ignore[arg-type]
            assert len(fake.requests) == 10  # the refused ones never reached the provider
            assert stack.openai(other).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"  # its own bucket
            # Metered calls are not counted here (their cost limits apply to them).
            stack.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        finally:
            stack.close()


def test_the_free_route_limit_is_checked_as_the_gateway_starts() -> None:
    from outlay._errors import ConfigError
    from outlay.gateway import GatewayConfig

    for bad in (0, -1, 1.5, True, "600"):
        with pytest.raises(ConfigError, match="free_requests_per_minute"):
            GatewayConfig.from_dict({"free_requests_per_minute": bad}, environ={})
    assert GatewayConfig.from_dict({}, environ={}).free_requests_per_minute == 600
