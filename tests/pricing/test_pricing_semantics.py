"""Unknown is never zero, bad input is refused, ratings are exact, additive and deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidInput
from outlay._rating import Rating
from outlay._usage import CACHE_AUDIO_READ_UNIT, Usage
from outlay.pricing import PriceCatalog, default_catalog, estimate, parse_overrides, rate

AT = datetime(2026, 1, 15, tzinfo=UTC)


def test_unknown_model_is_unpriced_with_a_reason_never_zero(genai: PriceCatalog) -> None:
    rating = genai.rate(Usage(input_tokens=10, output_tokens=5), provider="openai", model="gpt-9", at=AT)
    assert rating.priced is False
    assert rating.cost is None
    assert rating.reason == "no price for openai/gpt-9 in genai-prices 0.2.3 or overrides"
    assert rating.price_version == "genai-prices@0.2.3"
    assert dict(rating.breakdown) == {}
    # Even empty usage of an unknown model is not "free".
    assert genai.rate(Usage(), provider="nope", model="x", at=AT).cost is None


def test_unpriced_unit_keeps_the_priced_parts_in_the_breakdown(genai: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000, output_tokens=100, units={"gpu_seconds": D("5")})
    rating = genai.rate(usage, provider="openai", model="gpt-4o", at=AT)
    assert not rating.priced
    assert rating.cost is None
    assert rating.reason == (
        "no price for unit:gpu_seconds of openai/gpt-4o in genai-prices@0.2.3:openai/gpt-4o"
    )
    # 1_000*2.5/1e6 = 0.0025 ; 100*10/1e6 = 0.001
    assert dict(rating.breakdown) == {"input": D("0.0025"), "output": D("0.001")}


def test_web_search_on_a_model_without_a_search_price_is_unpriced(genai: PriceCatalog) -> None:
    rating = genai.rate(Usage(web_searches=1), provider="openai", model="text-embedding-3-small", at=AT)
    assert rating.cost is None
    assert rating.reason is not None
    assert "web_searches" in rating.reason


def test_genai_non_token_units_are_priced_by_their_genai_name(genai: PriceCatalog) -> None:
    # gpt-4o file search: $2.50 per 1,000 -> 3 * 0.0025 = 0.0075
    rating = genai.rate(Usage(units={"storage_searches": D("3")}), provider="openai", model="gpt-4o", at=AT)
    assert rating.cost == D("0.0075")


def test_model_with_no_record_in_force_yet_names_the_instant(catalog: PriceCatalog) -> None:
    before = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    usage = Usage(units={"gpu_seconds": D("1")})
    rating = catalog.rate(usage, provider="self-hosted", model="llama-3.1-70b", at=before)
    assert rating.cost is None
    assert rating.reason is not None
    assert "at 2025-12-31T23:59:00+00:00" in rating.reason
    assert catalog.resolve("self-hosted", "llama-3.1-70b", before) is None
    record = catalog.resolve("self-hosted", "llama-3.1-70b", before + timedelta(minutes=1))
    assert record is not None
    assert record.units["gpu_seconds"] == D("0.00125")


def test_audio_overlapping_cached_tokens_is_unpriced_rather_than_guessed(genai: PriceCatalog) -> None:
    # 1_000 input: 900 cache reads and 400 audio — some audio was cached, Usage cannot say how much.
    usage = Usage(input_tokens=1_000, cache_read_tokens=900, input_audio_tokens=400)
    rating = genai.rate(usage, provider="openai", model="gpt-4o-realtime-preview", at=AT)
    assert rating.cost is None
    assert rating.reason is not None
    assert "cannot split" in rating.reason


def test_cached_audio_is_a_part_of_the_cache_reads_at_its_own_price(genai: PriceCatalog) -> None:
    cached = {CACHE_AUDIO_READ_UNIT: 1_000_000}
    usage = Usage(input_tokens=3_000_000, cache_read_tokens=1_500_000, units=cached)
    rating = genai.rate(usage, provider="google", model="gemini-2.5-flash", at=AT)
    # 1M cached audio at $0.10, 0.5M cached text at $0.03, 1.5M text at $0.30: never a unit on top.
    assert rating.breakdown == {"cache_audio_read": D("0.1"), "cache_read": D("0.015"), "input": D("0.45")}
    assert rating.unit_prices["cache_audio_read"] == D("0.0000001")
    # An override prices it too; a count that cannot be a part of the cache reads is not guessed.
    catalog = PriceCatalog(
        parse_overrides(
            b'[[price]]\nprovider = "google"\nmodel = "gemini-2.5-flash"\ninput_mtok = "1"\n'
            b'cache_read_mtok = "0.1"\ncache_audio_read_mtok = "0.5"\n',
            name="p.toml",
        )
    )
    assert catalog.rate(usage, provider="google", model="gemini-2.5-flash", at=AT).cost == D("2.05")
    for units in ({CACHE_AUDIO_READ_UNIT: 1_500_001}, {CACHE_AUDIO_READ_UNIT: "0.5"}):
        odd = Usage(input_tokens=3_000_000, cache_read_tokens=1_500_000, units=units)
        rating = genai.rate(odd, provider="google", model="gemini-2.5-flash", at=AT)
        assert rating.cost is None
        assert rating.reason is not None and "cannot split" in rating.reason


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"usage": {"input_tokens": 1}}, "usage"),
        ({"provider": ""}, "provider"),
        ({"model": None}, "model"),
        ({"at": datetime(2026, 1, 1)}, "at"),  # naive: ambiguous
        ({"at": "2026-01-01"}, "at"),
    ],
)
def test_bad_arguments_raise_invalid_input_naming_the_field(
    genai: PriceCatalog, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {
        "usage": Usage(input_tokens=1),
        "provider": "openai",
        "model": "gpt-4o",
        "at": AT,
    }
    arguments.update(kwargs)
    usage = arguments.pop("usage")
    with pytest.raises(InvalidInput) as info:
        genai.rate(usage, **arguments)
    assert info.value.field == field


def test_unit_quantity_too_precise_to_rate_exactly_is_refused(catalog: PriceCatalog) -> None:
    usage = Usage(units={"gpu_seconds": D("1." + "1" * 70)})
    with pytest.raises(InvalidInput, match=r"units\.gpu_seconds"):
        catalog.rate(usage, provider="self-hosted", model="llama-3.1-70b", at=AT)


def test_holdable_quantity_times_a_long_price_is_unpriced_not_refused() -> None:
    # Both fit a ledger (36 places each), but their product needs more than 60 digits: the call is
    # kept unpriced with the reason (as for a cost of more than 36 places), never refused and lost.
    overrides = parse_overrides(
        b'[[price]]\nprovider = "self-hosted"\nmodel = "llama-3.1-70b"\n'
        b'units = { gpu_seconds = "0.000347222222222222222222222222222222", tool_calls = "0.01" }\n'
    )
    usage = Usage(units={"gpu_seconds": D("0.123456789012345678901234567890123456"), "tool_calls": 2})
    rating = PriceCatalog(overrides).rate(usage, provider="self-hosted", model="llama-3.1-70b", at=AT)
    assert (rating.priced, rating.cost) == (False, None)
    assert rating.reason is not None and "unit:gpu_seconds" in rating.reason
    assert "fewer decimal places" in rating.reason
    assert rating.breakdown == {"unit:tool_calls": D("0.02")}


def test_estimate_is_worst_case_tokens_times_prices_or_none(genai: PriceCatalog) -> None:
    # gpt-4o: 1_000 input * 2.5/1e6 = 0.0025 ; 500 max output * 10/1e6 = 0.005 ; total 0.0075
    assert genai.estimate(
        provider="openai", model="gpt-4o", input_tokens=1_000, max_output_tokens=500, at=AT
    ) == D("0.0075")
    assert (
        estimate(provider="openai", model="gpt-9", input_tokens=1, max_output_tokens=1, catalog=genai) is None
    )
    with pytest.raises(InvalidInput) as info:
        genai.estimate(provider="openai", model="gpt-4o", input_tokens=1, max_output_tokens=-1)
    assert info.value.field == "max_output_tokens"


def test_default_catalog_reads_outlay_prices(monkeypatch: pytest.MonkeyPatch, overrides_file: Path) -> None:
    assert default_catalog().version == "genai-prices@0.2.3"
    monkeypatch.setenv("OUTLAY_PRICES", str(overrides_file))
    catalog = default_catalog()
    assert catalog.version.startswith("genai-prices@0.2.3+overrides@")
    assert default_catalog() is catalog  # cached
    usage = Usage(units={"gpu_seconds": D("2")})
    assert rate(usage, provider="self-hosted", model="llama-3.1-70b", at=AT).cost == D("0.0025")


def test_a_runtime_genai_snapshot_never_changes_our_prices(genai: PriceCatalog) -> None:
    from genai_prices.data_snapshot import DataSnapshot, set_custom_snapshot

    from outlay.pricing._genai import genai_history

    set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    genai_history.cache_clear()  # force a fresh lookup while the empty snapshot is installed
    try:
        fresh = PriceCatalog()
        assert fresh.rate(Usage(input_tokens=1_000_000), provider="openai", model="gpt-4o", at=AT).cost == D(
            "2.5"
        )
    finally:
        set_custom_snapshot(None)


# -- exactness, additivity, determinism --------------------------------------------------------------


def _assert_exact(rating: Rating) -> None:
    assert rating.cost is None or type(rating.cost) is D
    for mapping in (rating.breakdown, rating.unit_prices):
        for value in mapping.values():
            assert type(value) is D, value


@st.composite
def _usages(draw: st.DrawFn, max_input: int) -> Usage:
    input_tokens = draw(st.integers(0, max_input))
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output = draw(st.integers(0, 50_000))
    return Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=draw(st.integers(0, cache_write)),
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        web_searches=draw(st.integers(0, 5)),
    )


MODELS = [
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "gpt-4o"),
    ("google", "gemini-2.5-pro"),
    ("openai", "o3"),
]


@settings(max_examples=200, deadline=None)
@given(a=_usages(100_000), b=_usages(100_000), which=st.sampled_from(MODELS), days=st.integers(0, 900))
def test_rating_is_additive_within_one_tier(a: Usage, b: Usage, which: tuple[str, str], days: int) -> None:
    provider, model = which
    at = datetime(2024, 6, 1, tzinfo=UTC) + timedelta(days=days)
    catalog = PriceCatalog()
    ra, rb, rab = (catalog.rate(u, provider=provider, model=model, at=at) for u in (a, b, a + b))
    for rating in (ra, rb, rab):
        _assert_exact(rating)
    assert ra.priced
    assert rb.priced
    assert rab.priced
    assert ra.cost is not None
    assert rb.cost is not None
    assert ra.cost + rb.cost == rab.cost
    for kind in set(ra.breakdown) | set(rb.breakdown):
        assert ra.breakdown.get(kind, D(0)) + rb.breakdown.get(kind, D(0)) == rab.breakdown[kind]


@settings(max_examples=100, deadline=None)
@given(u=_usages(400_000), which=st.sampled_from(MODELS))
def test_rating_is_deterministic_and_exact(u: Usage, which: tuple[str, str]) -> None:
    provider, model = which
    first = PriceCatalog().rate(u, provider=provider, model=model, at=AT)
    second = PriceCatalog().rate(u, provider=provider, model=model, at=AT)
    assert first == second
    assert str(first.cost) == str(second.cost)
    _assert_exact(first)
    assert first.cost == sum(first.breakdown.values(), D(0))


def test_same_rating_in_another_process(overrides_file: Path) -> None:
    script = (
        "from datetime import datetime, UTC; from decimal import Decimal;"
        "from outlay._usage import Usage; from outlay.pricing import PriceCatalog;"
        f"c = PriceCatalog.load({str(overrides_file)!r});"
        "u = Usage(input_tokens=26000, cache_read_tokens=20000, cache_write_tokens=5000,"
        " cache_write_1h_tokens=2000, output_tokens=800, units={'gpu_seconds': Decimal('1.5')});"
        "at = datetime(2026, 1, 1, tzinfo=UTC);"
        "print(repr(c.rate(u, provider='anthropic', model='claude-sonnet-4-5', at=at)));"
        "print(repr(c.rate(u, provider='openai', model='gpt-4o', at=datetime(2026,4,1,tzinfo=UTC))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    runs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
    assert "priced=False" in runs.pop()  # gpu_seconds has no price there: still a stable answer


def test_concurrent_rating_from_threads_agrees(genai: PriceCatalog) -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_500)
    models = ["gpt-4o", "o3", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"] * 40

    def one(model: str) -> tuple[str, D | None]:
        return model, genai.rate(usage, provider="openai", model=model, at=AT).cost

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, models))
    expected = {m: PriceCatalog().rate(usage, provider="openai", model=m, at=AT).cost for m in set(models)}
    assert all(cost == expected[model] for model, cost in results)
    assert expected["gpt-4o"] == D("0.035")
