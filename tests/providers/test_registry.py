"""Provider ids: built-ins, the gemini alias, and user-declared providers speaking a known format."""

from __future__ import annotations

import threading
import uuid

import pytest

from outlay._errors import InvalidInput
from outlay._usage import Usage
from outlay.providers import declare_provider, normalize_provider, parse_response, usage_from_response

from . import fixtures as fx


def _name(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("openai", "openai"),
        ("OpenAI", "openai"),
        (" anthropic ", "anthropic"),
        ("google", "google"),
        ("gemini", "google"),
        ("Gemini", "google"),
    ],
)
def test_normalize_provider(given: str, expected: str) -> None:
    assert normalize_provider(given) == expected


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_provider("azure")
    message = str(caught.value)
    for known in ("openai", "anthropic", "google", "gemini (= google)", "declare_provider"):
        assert known in message
    with pytest.raises(InvalidInput, match="must be a string"):
        normalize_provider(None)  # type: ignore[arg-type]


def test_declared_provider_reads_its_format_and_appears_in_the_known_list() -> None:
    name = declare_provider(_name("vllm"), like="openai")
    assert normalize_provider(name.upper()) == name
    parsed = parse_response(name, fx.CHAT_COMPLETION)
    assert parsed.usage.cache_read_tokens == 1920
    with pytest.raises(InvalidInput, match=name):
        normalize_provider("still-unknown")
    proxy = declare_provider(_name("claude-proxy"), like="anthropic")
    assert usage_from_response(proxy, fx.ANTHROPIC_MESSAGE).cache_write_1h_tokens == 2000
    vertex = declare_provider(_name("vertex"), like="gemini")
    assert usage_from_response(vertex, fx.GEMINI_RESPONSE).reasoning_tokens == 450


def test_declaring_like_a_declared_provider_uses_the_underlying_format() -> None:
    base = declare_provider(_name("base"), like="openai")
    derived = declare_provider(_name("derived"), like=base)
    assert usage_from_response(derived, fx.EMBEDDINGS) == Usage(input_tokens=8)


def test_redeclaring_is_idempotent_but_changing_the_format_is_refused() -> None:
    name = _name()
    assert declare_provider(name) == name
    assert declare_provider(name, like="openai") == name
    with pytest.raises(InvalidInput, match="already declared with the openai format"):
        declare_provider(name, like="anthropic")
    assert usage_from_response(name, fx.CHAT_COMPLETION).input_tokens == 2006  # still openai


@pytest.mark.parametrize("bad", ["", "Has Space", "9lives", "x" * 65, "semi;colon"])
def test_bad_provider_names(bad: str) -> None:
    with pytest.raises(InvalidInput, match=r"^name: provider name"):
        declare_provider(bad)


@pytest.mark.parametrize("builtin", ["openai", "anthropic", "google", "gemini"])
def test_builtins_cannot_be_redeclared(builtin: str) -> None:
    with pytest.raises(InvalidInput, match="built-in"):
        declare_provider(builtin, like="openai")


def test_like_must_be_a_known_provider() -> None:
    with pytest.raises(InvalidInput, match="unknown provider 'cohere'"):
        declare_provider(_name(), like="cohere")


def test_concurrent_declarations_of_one_name_agree_on_one_format() -> None:
    name = _name("race")
    results: list[str] = []
    barrier = threading.Barrier(16)

    def declare(like: str) -> None:
        barrier.wait()
        try:
            declare_provider(name, like=like)
            results.append(like)
        except InvalidInput:
            results.append("refused")

    threads = [
        threading.Thread(target=declare, args=("openai" if i % 2 else "anthropic",)) for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = {r for r in results if r != "refused"}
    assert len(winners) == 1
    assert results.count("refused") == 8
