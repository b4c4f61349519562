"""Upstream faults reach the client as the provider's own typed errors, and the call is still settled."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from outlay._errors import BackendUnavailable
from outlay._usage import Usage
from outlay.gateway import Admission, Gateway, InMemoryHooks, Outcome, Principal, Settlement
from outlay.testing import FakeProvider, Fault, LiveServer

from .conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_config, make_hooks, wait_for

MESSAGES = [{"role": "user", "content": "hello"}]


def test_429_keeps_retry_after_and_openai_error_shape(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.error(429, retry_after=7, message="slow down"))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"
    body = caught.value.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert "slow down" in body["error"]["message"]
    _, outcome, settlement = hooks.outcomes[0]
    assert outcome.status == 429
    assert outcome.usage == Usage()
    assert settlement.cost == 0


def test_the_providers_own_error_code_param_and_type_reach_the_sdk(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.error(400, message="too long", code="context_length_exceeded", param="messages"))
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    fake.fail(Fault.error(429, message="no credit", code="insufficient_quota", type="insufficient_quota"))
    with pytest.raises(openai.RateLimitError) as quota:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert (quota.value.code, quota.value.type) == ("insufficient_quota", "insufficient_quota")
    fake.fail(Fault.error(400, type="invalid_request_error", message="max_tokens: too large"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert bad.value.response.json()["error"]["type"] == "invalid_request_error"


def test_the_providers_retry_advice_and_null_code_reach_the_sdk(
    oai: openai.OpenAI, fake: FakeProvider
) -> None:
    # x-should-retry: false on a 500 must stop the SDK's retries as it would against the provider.
    fake.fail(Fault.error(500, message="do not retry", should_retry=False))
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.code is None  # OpenAI's "code": null, not a code the gateway made up


def test_an_upstream_redirect_is_a_502_and_not_billed(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.error(301, message="Moved Permanently"))
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502 and "HTTP 301" in caught.value.message
    _, outcome, settlement = hooks.outcomes[0]
    assert outcome.usage == Usage() and settlement.cost == 0


def test_anthropic_529_is_an_overloaded_error(
    claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.error(529))
    with pytest.raises(anthropic.OverloadedError) as caught:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.json()["error"]["type"] == "overloaded_error"


def test_upstream_500_is_a_server_error(oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider) -> None:
    fake.fail(Fault.error(500))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert hooks.outcomes[0][1].status == 500


def test_gemini_list_shaped_error_becomes_openai_shaped(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.error(400, message="Unknown name web_search_options"))
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)  # type: ignore[arg-type]
    error = caught.value.response.json()["error"]
    assert "Unknown name web_search_options" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_hanging_upstream_is_a_504_and_usage_is_unknown_not_zero(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.hang())
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    _, outcome, settlement = hooks.outcomes[0]
    assert outcome.usage is None  # the provider may have billed it: unknown, never zero
    assert settlement.cost is None


def test_dropped_non_stream_response_is_a_502(
    oai: openai.OpenAI, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.drop())
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502


def test_drop_mid_stream_raises_in_the_sdk_and_bills_what_is_known(
    oai: openai.OpenAI, claude: anthropic.Anthropic, hooks: InMemoryHooks, fake: FakeProvider
) -> None:
    fake.fail(Fault.drop(after_chunks=3))
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    fake.fail(Fault.drop(after_chunks=3))
    with (
        pytest.raises(anthropic.APIError),
        claude.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=MESSAGES,  # type: ignore[arg-type]
        ) as stream,
    ):
        stream.get_final_message()
    wait_for(lambda: len(hooks.outcomes) == 2)
    (_, chat, chat_bill), (_, message, message_bill) = hooks.outcomes
    assert chat.status == 502
    # OpenAI sends usage only in its last chunk: nothing is known, and that is flagged, not zero.
    assert chat.usage is not None
    assert not chat.usage.complete
    assert chat.usage.reason
    assert chat_bill.cost is not None
    assert chat_bill.cost == hooks.estimate > 0  # billed the estimate, never zero
    # Anthropic reported input usage in message_start: kept, flagged as a lower bound.
    assert message.usage is not None
    assert message.usage.input_tokens > 0
    assert not message.usage.complete
    assert message_bill.cost is not None
    assert message_bill.cost > 0


def test_an_upstream_cut_inside_an_event_leaves_the_sdk_a_clean_error(
    oai: openai.OpenAI, claude: anthropic.Anthropic, fake: FakeProvider
) -> None:
    # Passed through as the upstream sends it (the client asked for usage itself): a half event
    # before the gateway's error event made both SDKs fail on JSON instead of raising APIError.
    fake.fail(Fault.drop(after_chunks=2, mid_event=True))
    with pytest.raises(openai.APIError):
        list(
            oai.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},  # type: ignore[arg-type]
            )
        )
    fake.fail(Fault.drop(after_chunks=2, mid_event=True))
    with (
        pytest.raises(anthropic.APIError),
        claude.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES) as stream,  # type: ignore[arg-type]
    ):
        stream.get_final_message()


class _LedgerDown(InMemoryHooks):
    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        raise BackendUnavailable("the event log is unreachable")


def test_a_stream_whose_call_cannot_be_recorded_ends_in_an_error_the_sdk_raises() -> None:
    keys = {CLIENT_KEY: Principal("acme", key_id="k1")}
    with LiveServer(FakeProvider(api_key=UPSTREAM_KEY)) as upstream:
        app = Gateway(gateway_config(upstream.url), hooks=_LedgerDown(keys), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            # [DONE] is sent only once the call is recorded: after it the SDK would read nothing
            with pytest.raises(openai.APIError, match="backend unavailable"):
                list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
            raw = httpx.post(
                gw.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
            )
            client.close()
    assert "[DONE]" not in raw.text and raw.text.rstrip().endswith("}")


def test_a_billed_call_that_cannot_be_recorded_is_not_retried_by_the_sdks() -> None:
    # The provider answered (and billed) but the ledger is down: a 503 the SDKs retry by default
    # would make the provider bill the call again on each retry, none of them recorded.
    keys = {CLIENT_KEY: Principal("acme", key_id="k1")}
    provider = FakeProvider(api_key=UPSTREAM_KEY)
    with LiveServer(provider) as upstream:
        app = Gateway(gateway_config(upstream.url), hooks=_LedgerDown(keys), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=2)
            with pytest.raises(openai.InternalServerError) as caught:
                oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert "backend unavailable" in caught.value.message and "billed" in caught.value.message
            assert len(provider.requests) == 1
            claude = anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=2)
            with pytest.raises(anthropic.InternalServerError):
                claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
            assert len(provider.requests) == 2
            # An upstream error answer is not billed: retrying it costs nothing, so the SDK may.
            provider.fail(Fault.error(500), times=3)
            once_more = oai.with_options(max_retries=1)
            with pytest.raises(openai.InternalServerError):
                once_more.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert len(provider.requests) == 4
            oai.close()
            claude.close()


def test_a_call_past_max_call_seconds_is_ended_with_a_504_its_usage_unknown() -> None:
    slow = FakeProvider(api_key=UPSTREAM_KEY, chunk_delay=0.4)
    with LiveServer(slow) as upstream:
        app = Gateway(gateway_config(upstream.url, max_call_seconds=1.0), hooks=make_hooks(), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            with pytest.raises(openai.APIError, match="max_call_seconds"):
                list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
            slow.fail(Fault.hang())
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            client.close()
            wait_for(lambda: len(app.hooks.outcomes) == 2)  # type: ignore[attr-defined]
    assert caught.value.status_code == 504 and "max_call_seconds" in caught.value.message
    for _, outcome, _ in app.hooks.outcomes:  # type: ignore[attr-defined]
        assert outcome.status == 504
        assert outcome.usage is None or not outcome.usage.complete  # unknown: billed an estimate, never 0


def test_upstream_rejecting_gateway_credentials_is_a_502_without_the_key(hooks: InMemoryHooks) -> None:
    strict = FakeProvider(api_key="sk-a-different-key")
    with LiveServer(strict) as upstream:
        app = Gateway(gateway_config(upstream.url), hooks=make_hooks(), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            client.close()
    assert caught.value.status_code == 502
    assert "credentials" in caught.value.message
    assert UPSTREAM_KEY not in caught.value.response.text


@pytest.mark.parametrize(
    "words",
    [
        # OpenAI's answer to a rotated key: the key masked but for its prefix and last four characters
        "Incorrect API key provided: sk-upstr*****************6789. You can find your API key at"
        " https://platform.openai.com/account/api-keys.",
        "No such organization: org-OperatorsOwn123.",
    ],
)
def test_the_providers_words_on_the_gateways_credentials_reach_the_log_not_the_tenant(
    words: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = FakeProvider(api_key=UPSTREAM_KEY)
    with LiveServer(provider) as upstream:
        app = Gateway(gateway_config(upstream.url), hooks=make_hooks(), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            for status in (401, 403):
                provider.fail(Fault.error(status, message=words, code="invalid_api_key"))
                with caplog.at_level("WARNING", logger="outlay.gateway"):
                    response = httpx.post(
                        gw.url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {CLIENT_KEY}"},
                        json={"model": "gpt-4o-mini", "messages": MESSAGES},
                    )
                assert response.status_code == 502
                error = response.json()["error"]
                assert error["code"] == "upstream_auth_failed" and "credentials" in error["message"]
                for told in ("sk-upstr", "6789", "org-OperatorsOwn"):  # no part of the key, no organization
                    assert told not in response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "outlay.gateway"]
    assert len(logged) == 2 and all(words in line for line in logged)  # the operator still learns why


def test_unreachable_upstream_is_a_502(hooks: InMemoryHooks) -> None:
    with LiveServer(FakeProvider()) as gone:
        dead_url = gone.url
    app = Gateway(gateway_config(dead_url), hooks=make_hooks(), trust_env=False)
    with LiveServer(app, lifespan="on") as gw:
        response = httpx.post(
            gw.url + "/v1/messages",
            headers={"x-api-key": CLIENT_KEY},
            json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MESSAGES},
        )
    assert response.status_code == 502
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "api_error"
    assert app.hooks.outcomes[0][1].usage == Usage()  # type: ignore[attr-defined]  # never sent: nothing billed


def test_the_upstream_refusing_the_gateways_key_is_not_retried_by_the_sdks() -> None:
    # The same key is refused again on every retry: the SDKs' two retries only made the caller
    # wait (with backoff) and logged the operator's warning three times.
    provider = FakeProvider(api_key=UPSTREAM_KEY)
    with LiveServer(provider) as upstream:
        app = Gateway(gateway_config(upstream.url), hooks=make_hooks(), trust_env=False)
        with LiveServer(app, lifespan="on") as gw:
            provider.fail(Fault.error(401, code="invalid_api_key"), times=10)
            oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=2)
            with pytest.raises(openai.APIStatusError) as caught:
                oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert caught.value.status_code == 502
            assert len(provider.requests) == 1
            claude = anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=2)
            with pytest.raises(anthropic.APIStatusError):
                claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
            assert len(provider.requests) == 2
            oai.close()
            claude.close()
