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


@given(
    st.lists(st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\r\n\n"]), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0), max_size=16),
)
def test_hidden_usage_filter_finds_every_kind_of_event_end_across_any_cut(
    ends: list[bytes], cuts: list[int]
) -> None:
    events = [b'data: {"n":%d}' % i + end for i, end in enumerate(ends)]
    data = b"".join(events)
    hidden = HiddenUsageFilter(hide=False)
    pieces = [hidden.feed(piece) for piece in _cut(data, cuts)]
    assert b"".join(pieces) == data
    assert hidden.flush() == b""


def test_hidden_usage_filter_reads_a_huge_event_in_small_pieces_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Responses ``response.completed`` repeats the whole output (megabytes, say a generated image)
    and arrives in thousands of socket reads: each byte must be searched for the event end about
    once, not once per read (quadratic: seconds of CPU on the event loop for a few megabytes)."""
    import outlay.gateway._streaming as streaming

    searched = 0
    real = streaming._EVENT_END

    class Counting:
        def search(self, buffer: bytes, pos: int = 0) -> object:
            nonlocal searched
            searched += len(buffer) - pos
            return real.search(buffer, pos)

    monkeypatch.setattr(streaming, "_EVENT_END", Counting())
    event = b'event: response.completed\ndata: {"output":"' + b"a" * 1_000_000 + b'"}\n\n'
    hidden = HiddenUsageFilter(hide=False)
    out = b"".join(hidden.feed(event[i : i + 1024]) for i in range(0, len(event), 1024))
    assert out == event
    assert searched < 2 * len(event)


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
