"""The official SDKs, pointed at the gateway, get the provider's answers — and every call is metered."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from outlay._usage import Usage
from outlay.gateway import InMemoryHooks
from outlay.testing import FakeProvider, count_input_tokens

from .conftest import CLIENT_KEY, UPSTREAM_KEY, wait_for

MESSAGES = [{"role": "user", "content": "How much did tenant acme spend on agents last quarter?"}]


def _only_outcome(hooks: InMemoryHooks):  # type: ignore[no-untyped-def]
    wait_for(lambda: len(hooks.outcomes) == 1)
    return hooks.outcomes[0]


def test_chat_non_stream_returns_provider_answer_and_meters_it(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    completion = raw.parse()
    expected_in = count_input_tokens({"messages": MESSAGES})
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (expected_in, 16)
    assert completion.choices[0].message.content
    admission, outcome, settlement = _only_outcome(hooks)
    assert admission.principal.tenant_id == "acme"
    assert outcome.status == 200
    assert outcome.usage == Usage(input_tokens=expected_in, output_tokens=16)
    assert outcome.model == "gpt-4o-mini"
    assert outcome.response_id == completion.id
    assert settlement.cost == Decimal("0.000001") * (expected_in + 16)
    assert raw.headers["x-outlay-cost"] == str(settlement.cost)
    assert raw.headers["x-outlay-budget-remaining"] == "unlimited"


def test_chat_stream_hides_the_usage_chunk_the_gateway_added(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert chunks, "the stream carried no chunks"
    assert all(chunk.choices for chunk in chunks), "a usage-only chunk leaked to a client that did not ask"
    assert all(getattr(chunk, "usage", None) is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("lorem ipsum")
    sent = fake.requests[-1].json()
    assert sent["stream_options"] == {"include_usage": True}
    _, outcome, settlement = _only_outcome(hooks)
    assert outcome.usage is not None
    assert outcome.usage.output_tokens == 16
    assert outcome.usage.complete
    assert settlement.cost is not None
    assert settlement.cost > 0


def test_chat_stream_keeps_the_usage_chunk_a_client_asked_for(
    oai: openai.OpenAI, hooks: InMemoryHooks
) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    _, outcome, _ = _only_outcome(hooks)
    assert outcome.usage is not None
    assert outcome.usage.output_tokens == 16


def test_reasoning_and_cached_tokens_are_metered(oai: openai.OpenAI, hooks: InMemoryHooks) -> None:
    oai.chat.completions.create(model="o4-mini", messages=MESSAGES)  # type: ignore[arg-type]
    _, outcome, _ = _only_outcome(hooks)
    assert outcome.usage is not None
    assert (outcome.usage.output_tokens, outcome.usage.reasoning_tokens, outcome.usage.cache_read_tokens) == (
        20,
        8,
        3,
    )


def test_responses_non_stream_and_stream(oai: openai.OpenAI, hooks: InMemoryHooks) -> None:
    response = oai.responses.create(model="gpt-4o", input="Summarise the ledger.")
    assert response.output_text.startswith("lorem")
    events = list(oai.responses.create(model="gpt-4o", input="Summarise the ledger.", stream=True))
    assert events[-1].type == "response.completed"
    wait_for(lambda: len(hooks.outcomes) == 2)
    usages = [outcome.usage for _, outcome, _ in hooks.outcomes]
    assert usages[0] == usages[1] == Usage(input_tokens=response.usage.input_tokens, output_tokens=16)  # type: ignore[union-attr]


def test_embeddings_with_the_sdk_default_base64_encoding(oai: openai.OpenAI, hooks: InMemoryHooks) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert [len(d.embedding) for d in result.data] == [8, 8]
    _, outcome, _ = _only_outcome(hooks)
    assert outcome.usage == Usage(input_tokens=result.usage.prompt_tokens)


def test_anthropic_messages_non_stream_normalises_cache_tokens(
    claude: anthropic.Anthropic, hooks: InMemoryHooks
) -> None:
    message = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    assert message.usage.cache_read_input_tokens == 6
    _, outcome, _ = _only_outcome(hooks)
    total_in = message.usage.input_tokens + 6 + 4
    assert outcome.usage == Usage(
        input_tokens=total_in, cache_read_tokens=6, cache_write_tokens=4, output_tokens=12
    )


def test_anthropic_messages_stream(claude: anthropic.Anthropic, hooks: InMemoryHooks) -> None:
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.usage.output_tokens == 5
    assert final.stop_reason == "max_tokens"
    _, outcome, _ = _only_outcome(hooks)
    assert outcome.usage is not None
    assert outcome.usage.output_tokens == 5
    assert outcome.usage.cache_read_tokens == 6
    assert outcome.model == "claude-haiku-4-5"


def test_client_key_never_reaches_upstream_and_upstream_key_never_reaches_client(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=10,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"x-api-key": CLIENT_KEY, "baggage": "tenant=evil"},
    )
    for request in fake.requests:
        forwarded = " ".join(f"{k}: {v}" for k, v in request.headers.items())
        assert CLIENT_KEY not in forwarded
        assert CLIENT_KEY.encode() not in request.body
        assert "baggage" not in request.headers
    assert fake.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert fake.requests[1].headers["x-api-key"] == UPSTREAM_KEY
    assert fake.requests[1].headers["anthropic-version"]
    assert UPSTREAM_KEY not in str(raw.headers)
    assert UPSTREAM_KEY not in raw.http_response.text


def test_routes_gemini_selfhosted_and_aliases(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    oai.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)  # type: ignore[arg-type]
    oai.chat.completions.create(model="llama-3.1-8b", messages=MESSAGES)  # type: ignore[arg-type]
    oai.chat.completions.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]
    oai.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    claude.messages.create(model="haiku", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    seen = [(r.path, r.json()["model"]) for r in fake.requests]
    assert seen == [
        ("/v1beta/openai/chat/completions", "gemini-2.0-flash"),
        ("/v1/chat/completions", "llama-3.1-8b"),
        ("/v1/chat/completions", "gpt-4o-mini"),
        ("/v1/chat/completions", "gpt-4o"),
        ("/v1/messages", "claude-haiku-4-5"),
    ]
    assert [a.call.upstream.name for a, _, _ in hooks.outcomes] == [
        "gemini",
        "local",
        "openai",
        "openai",
        "anthropic",
    ]


def test_models_lists_every_openai_style_upstream_and_aliases(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks
) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids
    assert "fast" in ids
    assert "haiku" in ids
    assert ids.count("gpt-4o-mini") == 3  # openai, gemini and the self-hosted upstream all answer
    assert "claude-haiku-4-5" in [m.id for m in claude.models.list()]


COUNTED = [{"role": "user", "content": "How many tokens is this question, for the record?"}]


def test_count_tokens_is_passed_through_with_the_upstream_key_and_not_metered(
    claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    counted = claude.messages.count_tokens(model="claude-haiku-4-5", messages=COUNTED, system="Be brief.")  # type: ignore[arg-type]
    assert counted.input_tokens == count_input_tokens({"messages": COUNTED, "system": "Be brief."})
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages/count_tokens")
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and CLIENT_KEY not in str(sent.headers)
    # An alias is counted by the model it names, under the upstream's own name for it.
    assert claude.messages.count_tokens(model="haiku", messages=COUNTED).input_tokens > 0  # type: ignore[arg-type]
    assert json.loads(fake.requests[-1].body)["model"] == "claude-haiku-4-5"
    assert hooks.outcomes == []  # free: nothing admitted, settled or recorded


def test_count_tokens_refusals_are_anthropic_errors_and_send_nothing(
    gw_url: str, claude: anthropic.Anthropic, fake: FakeProvider
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="count_tokens"):
        claude.messages.count_tokens(model="gpt-4o-mini", messages=COUNTED)  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError, match="no route"):
        claude.messages.count_tokens(model="no-such-model", messages=COUNTED)  # type: ignore[arg-type]
    stranger = anthropic.Anthropic(base_url=gw_url, api_key="sk-not-ours", max_retries=0, timeout=10)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.count_tokens(model="claude-haiku-4-5", messages=COUNTED)  # type: ignore[arg-type]
    stranger.close()
    assert fake.requests == []
    # The upstream's own refusal reaches the client as Anthropic's error.
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        claude.messages.count_tokens(model="claude-haiku-4-5", messages=None)  # type: ignore[arg-type]


def test_models_retrieve_answers_from_the_upstream_serving_the_model(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    model = oai.models.retrieve("gpt-4o-mini")
    assert (model.id, model.owned_by) == ("gpt-4o-mini", "openai")
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("GET", "/v1/models/gpt-4o-mini")
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert oai.models.retrieve("fast").owned_by == "outlay-alias"  # as the list shows it
    info = claude.models.retrieve("claude-haiku-4-5")
    assert (info.id, info.type) == ("claude-haiku-4-5", "model")
    assert fake.requests[-1].headers["x-api-key"] == UPSTREAM_KEY
    assert hooks.outcomes == []
    # Each client sees the models of its own list: another format's, or an unrouted one, is a 404.
    for unknown in ("claude-haiku-4-5", "no-such-model", "llama-9"):  # llama-9: the upstream's own 404
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve(unknown)
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("gpt-4o")
    assert [r.path for r in fake.requests[-1:]] == ["/v1/models/llama-9"]


@pytest.mark.parametrize(
    "model_id",
    [
        "openai%2F..%2Ffiles",  # GET /v1/files: every tenant's uploads, with the gateway's key
        "gpt-x%2F..%2F..%2Fchat%2Fcompletions",  # the stored completions of every tenant
        "llama-1%2F..%2F..%2F..%2Fadmin",  # anywhere on a self-hosted upstream's host
        "gpt-4o%2F.%2F..%2Fgpt-4o-mini",
        "%2E%2E",  # ".." itself
    ],
)
def test_a_model_id_cannot_climb_out_of_the_upstreams_models_path(
    gw_url: str, fake: FakeProvider, model_id: str
) -> None:
    # The server decodes %2F, so "{id}" may hold "..": joined to <base>/models/ it would send a GET
    # with the upstream's credential to any path of the provider's API, its answer passed back.
    answer = httpx.get(gw_url + "/v1/models/" + model_id, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status_code == 400
    assert "'..' and '.' are not model ids" in answer.json()["error"]["message"]
    batches = httpx.get(
        gw_url + "/v1/models/claude-x%2F..%2F..%2Fmessages%2Fbatches",
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    )
    assert (batches.status_code, batches.json()["error"]["type"]) == (400, "invalid_request_error")
    assert fake.requests == []
    # A self-hosted id holding '/' (and dots inside a segment) still reaches its upstream as it is.
    httpx.get(gw_url + "/v1/models/llama-org/v3..1.gguf", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/v1/models/llama-org/v3..1.gguf")]


def test_the_free_routes_take_only_their_method(gw_url: str, fake: FakeProvider) -> None:
    auth = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    wrong = httpx.get(gw_url + "/v1/messages/count_tokens", headers=auth)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    wrong = httpx.post(gw_url + "/v1/models/gpt-4o", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET")
    assert fake.requests == []
