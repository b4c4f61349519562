"""Routing, stream filtering and usage reading, without servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay._errors import ConfigError
from outlay._usage import Usage
from outlay.gateway import GatewayConfig, Route, Upstream
from outlay.gateway._metering import read_response, read_stream, stream_accumulator
from outlay.gateway._streaming import HiddenUsageFilter
from outlay.testing._wire import Reply, anthropic_stream, chat_stream

REPLY = Reply("chatcmpl-1", "gpt-4o-mini", ("lorem ", "ipsum ", "dolor"), 30, 3, cached_tokens=10)


def test_resolve_alias_prefix_and_routes() -> None:
    config = GatewayConfig.from_env(
        {},
        extra_upstreams=[Upstream("local", "openai_compatible", "http://10.0.0.5:8000/v1")],
        routes=[Route("meta-llama/*", "local")],
        aliases={"fast": "anthropic/claude-haiku-4-5"},
    )
    assert config.upstreams["openai"].base_url == "https://api.openai.com/v1"
    assert [
        (u.name, m) for u, m in [config.resolve(n) for n in ("fast", "gpt-4o", "local/x", "meta-llama/L3")]
    ] == [  # type: ignore[misc]
        ("anthropic", "claude-haiku-4-5"),
        ("openai", "gpt-4o"),
        ("local", "x"),
        ("local", "meta-llama/L3"),
    ]
    assert config.resolve("mystery-model") is None


def test_env_overrides_base_urls_and_keys() -> None:
    config = GatewayConfig.from_env(
        {"OUTLAY_UPSTREAM_ANTHROPIC": "http://fake:1/", "ANTHROPIC_API_KEY": "sk-secret-xyz"}
    )
    upstream = config.upstreams["anthropic"]
    assert upstream.url("messages") == "http://fake:1/v1/messages"
    assert upstream.api_key == "sk-secret-xyz"
    assert "sk-secret-xyz" not in repr(upstream)  # keys never end up in logs


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"upstreams": {"x": {"kind": "grpc", "base_url": "http://a"}}}, "upstreams.x"),
        ({"upstreams": {"x": {"base_url": "ftp://a"}}}, "upstreams.x"),
        ({"upstreams": {"x": {"base_url": "http://a", "colour": 1}}}, "upstreams.x"),
        ({"routes": [{"pattern": "a*", "upstream": "nowhere"}]}, "routes"),
        ({"routes": [{"pattern": "a*"}]}, "routes[0]"),
        ({"aliases": {"a": 1}}, "aliases"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.from_dict(data, environ={})
    assert str(caught.value).startswith(field)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_hidden_usage_filter_removes_exactly_the_usage_chunk(cuts: list[int], crlf: bool) -> None:
    events = list(chat_stream(REPLY, include_usage=True))
    if crlf:
        events = [e.replace(b"\n", b"\r\n") for e in events]
    hidden = HiddenUsageFilter()
    out = b"".join(hidden.feed(piece) for piece in _cut(b"".join(events), cuts)) + hidden.flush()
    assert out == b"".join(e for e in events if b'"choices":[]' not in e)
    assert hidden.hidden == 1


def test_stream_reader_flags_a_stream_without_usage_as_incomplete() -> None:
    accumulator = stream_accumulator("openai", "chat")
    for event in chat_stream(REPLY, include_usage=False):
        accumulator.feed(event)
    usage = read_stream(accumulator)
    assert not usage.complete
    assert usage.reason


def test_stream_reader_reads_a_whole_stream() -> None:
    accumulator = stream_accumulator("anthropic", "messages")
    reply = Reply("msg_1", "claude-haiku-4-5", ("a", "b"), 30, 3, cached_tokens=10, cache_write_tokens=5)
    for event in anthropic_stream(reply):
        accumulator.feed(event)
    assert read_stream(accumulator) == Usage(
        input_tokens=30, cache_read_tokens=10, cache_write_tokens=5, output_tokens=3
    )


@pytest.mark.parametrize(
    "body", [b'{"id": "x", "object": "chat.completion", "choices": []}', b"not json", b"[]"]
)
def test_a_2xx_without_readable_usage_is_incomplete_never_zero(body: bytes) -> None:
    usage, _, _ = read_response("openai", body, "chat")
    assert not usage.complete
    assert usage.reason is not None
    assert "usage" in usage.reason
