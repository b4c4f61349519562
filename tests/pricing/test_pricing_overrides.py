"""Overrides: custom units, effective dates superseding genai-prices, and validation of the file."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from outlay._errors import ConfigError
from outlay._usage import Usage
from outlay.pricing import PriceCatalog, load_overrides, parse_overrides


def _version_prefix(catalog: PriceCatalog) -> str:
    assert catalog.overrides is not None
    return catalog.overrides.source


def test_custom_gpu_second_unit_for_a_self_hosted_model(catalog: PriceCatalog) -> None:
    # 42.5 GPU-seconds * $0.00125 = $0.053125
    usage = Usage(units={"gpu_seconds": D("42.5")})
    at = datetime(2026, 2, 1, tzinfo=UTC)
    rating = catalog.rate(usage, provider="self-hosted", model="llama-3.1-70b", at=at)
    assert rating.cost == D("0.053125")
    assert dict(rating.breakdown) == {"unit:gpu_seconds": D("0.053125")}
    assert dict(rating.unit_prices) == {"unit:gpu_seconds": D("0.00125")}
    source = _version_prefix(catalog)
    assert re.fullmatch(r"overrides@[0-9a-f]{12}", source)
    assert rating.price_version == f"{source}:self-hosted/llama-3.1-70b@2026-01-01"


def test_tool_call_and_vector_query_units_from_a_glob_entry(catalog: PriceCatalog) -> None:
    # 3 calls * $0.005 = 0.015 ; 12 queries * $0.0004 = 0.0048 ; total 0.0198
    usage = Usage(units={"calls": D("3"), "queries": D("12")})
    rating = catalog.rate(usage, provider="tools", model="web-fetch", at=datetime(2026, 1, 1, tzinfo=UTC))
    assert rating.cost == D("0.0198")
    assert rating.price_version.endswith(":tools/*@2025-01-01")


def test_override_supersedes_genai_prices_only_while_in_force(catalog: PriceCatalog) -> None:
    # 10_000 input (4_000 cached), 1_500 output.
    # genai-prices gpt-4o ($2.50 / $1.25 / $10): 6_000*2.5/1e6 + 4_000*1.25/1e6 + 1_500*10/1e6 = 0.035
    # override from 2026-03-01 to 2026-09-01 ($2 / $1 / $8): 0.012 + 0.004 + 0.012 = 0.028
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_500)
    source = _version_prefix(catalog)

    def rated(at: datetime) -> tuple[D | None, str]:
        rating = catalog.rate(usage, provider="openai", model="gpt-4o", at=at)
        return rating.cost, rating.price_version

    assert rated(datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == (
        D("0.035"),
        "genai-prices@0.2.3:openai/gpt-4o",
    )
    assert rated(datetime(2026, 3, 1, tzinfo=UTC)) == (D("0.028"), f"{source}:openai/gpt-4o@2026-03-01")
    assert rated(datetime(2026, 8, 31, 23, 59, tzinfo=UTC))[0] == D("0.028")
    # effective_to is exclusive: genai-prices is back from 2026-09-01.
    assert rated(datetime(2026, 9, 1, tzinfo=UTC)) == (D("0.035"), "genai-prices@0.2.3:openai/gpt-4o")
    # The override names gpt-4o; a dated alias of it is covered too.
    dated = catalog.rate(
        usage, provider="openai", model="gpt-4o-2024-08-06", at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert dated.cost == D("0.028")


def test_override_replaces_the_whole_record_so_missing_keys_are_unpriced(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_mtok = "2"\n')
    catalog = PriceCatalog.load(path)
    rating = catalog.rate(
        Usage(input_tokens=1_000, output_tokens=10), provider="openai", model="gpt-4o", at=datetime.now(UTC)
    )
    assert not rating.priced
    assert rating.cost is None
    assert dict(rating.breakdown) == {"input": D("0.002")}
    assert rating.reason is not None
    assert "no price for output of openai/gpt-4o" in rating.reason


def test_exact_model_beats_glob_and_history_lists_both_sources(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        """
[[price]]
provider = "anthropic"
model = "claude-opus-*"
input_mtok = "1"
output_mtok = "1"

[[price]]
provider = "anthropic"
model = "claude-opus-4-1"
effective_from = 2026-01-01
input_mtok = "2"
output_mtok = "2"
"""
    )
    catalog = PriceCatalog.load(path)
    usage = Usage(input_tokens=1_000_000)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    assert catalog.rate(usage, provider="anthropic", model="claude-opus-4-1", at=at).cost == D("2")
    assert catalog.rate(usage, provider="anthropic", model="claude-opus-4-5", at=at).cost == D("1")
    sources = {r.source.split("@")[0] for r in catalog.history("anthropic", "claude-opus-4-1")}
    assert sources == {"genai-prices", "overrides"}


def test_an_entry_for_the_dated_id_beats_one_for_the_id_it_is_an_alias_of(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        """
[[price]]
provider = "openai"
model = "gpt-4o"
input_mtok = "2"

[[price]]
provider = "openai"
model = "gpt-4o-2024-08-06"
input_mtok = "5"
"""
    )
    catalog = PriceCatalog.load(path)
    usage = Usage(input_tokens=1_000_000)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    dated = catalog.rate(usage, provider="openai", model="GPT-4o-2024-08-06", at=at)
    assert (dated.cost, dated.price_version.split(":")[1]) == (D("5"), "openai/gpt-4o-2024-08-06")
    assert catalog.rate(usage, provider="openai", model="gpt-4o", at=at).cost == D("2")
    # Another dated id of gpt-4o, with no entry of its own, is still covered by gpt-4o's.
    assert catalog.rate(usage, provider="openai", model="gpt-4o-2024-11-20", at=at).cost == D("2")


def test_cache_write_ttl_without_its_own_price_uses_the_cache_write_price(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "m1"\ninput_mtok = "3"\ncache_write_mtok = "3.75"\n'
    )
    # 2_000 written with the 1h TTL, no 1h price: 2_000 * 3.75 / 1e6 = 0.0075
    usage = Usage(input_tokens=2_000, cache_write_tokens=2_000, cache_write_1h_tokens=2_000)
    rating = PriceCatalog.load(path).rate(usage, provider="acme", model="m1", at=datetime.now(UTC))
    assert dict(rating.breakdown) == {"cache_write_1h": D("0.0075")}


def test_tiers_and_reasoning_price_from_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        """
[[price]]
provider = "acme"
model = "think-1"
input_mtok = { base = "1", tiers = [{ start = 100, price = "2" }, { start = 1000, price = "3" }] }
output_mtok = "10"
output_reasoning_mtok = "20"
"""
    )
    catalog = PriceCatalog.load(path)
    now = datetime.now(UTC)
    # 1_001 input at the second tier ($3): 0.003003 ; 10 output (4 reasoning):
    #   6 * 10/1e6 = 0.00006 ; 4 * 20/1e6 = 0.00008 ; total 0.003143
    rating = catalog.rate(
        Usage(input_tokens=1_001, output_tokens=10, reasoning_tokens=4),
        provider="acme",
        model="think-1",
        at=now,
    )
    assert rating.cost == D("0.003143")
    assert rating.breakdown["output_reasoning"] == D("0.00008")
    # Estimate: worst case puts every max output token at the reasoning price.
    #   50 input (below the first tier, $1): 50*1/1e6 = 0.00005 ; 10 output at $20: 0.0002 ; 0.00025
    assert catalog.estimate(provider="acme", model="think-1", input_tokens=50, max_output_tokens=10) == D(
        "0.00025"
    )


# -- validation --------------------------------------------------------------------------------------


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_overrides(text.encode(), name="prices.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('input_mtok = "1"\nbogus = 1', "price[0].bogus: unknown key"),
        ('input_mtok = "-1"', "price[0].input_mtok: amount must not be negative"),
        ("input_mtok = nan", "price[0].input_mtok: amount must be finite"),
        ("input_mtok = inf", "price[0].input_mtok: amount must be finite"),
        ('input_mtok = "ten"', "price[0].input_mtok: not a decimal amount"),
        ("input_mtok = true", "price[0].input_mtok: expected a price"),
        ('input_mtok = "1"\neffective_from = "2026-13-01"', "price[0].effective_from: not an ISO date"),
        ('input_mtok = "1"\neffective_from = 2026-01-01T00:00:00', "price[0].effective_from: datetime"),
        (
            'input_mtok = "1"\neffective_from = 2026-02-01\neffective_to = 2026-01-01',
            "price[0].effective_to: must be after effective_from",
        ),
        (
            'input_mtok = "1"\neffective_from = 2026-02-01\neffective_to = 2026-02-01',
            "price[0].effective_to: must be after effective_from",
        ),
        ('units = { "GPU Seconds" = "1" }', "price[0].units.GPU Seconds: unit names must match"),
        ('units = { gpu = "-0.1" }', "price[0].units.gpu: amount must not be negative"),
        ("note = 'no prices here'", "price[0]: no prices"),
        (
            'input_mtok = { base = "1", tiers = [{ start = 10, price = "2" }, { start = 5, price = "3" }] }',
            "price[0].input_mtok.tiers[1].start: tiers must be in increasing order",
        ),
        ('input_mtok = { base = "1" }', "price[0].input_mtok.tiers: expected a non-empty list"),
        (  # past year 9999 once in UTC: a clear error, not an OverflowError traceback
            'input_mtok = "1"\neffective_to = 9999-12-31T23:00:00-05:00',
            "price[0].effective_to: 9999-12-31T23:00:00-05:00 is outside the dates a price can have",
        ),
    ],
)
def test_bad_entries_are_refused_naming_file_entry_and_field(entry: str, expected: str) -> None:
    message = _errors(f'[[price]]\nprovider = "acme"\nmodel = "m"\n{entry}\n')
    assert message.startswith("prices.toml: ")
    assert expected in message


def test_missing_provider_and_model_are_named() -> None:
    message = _errors('[[price]]\ninput_mtok = "1"\n')
    assert "price[0].provider: required" in message
    assert "price[0].model: required" in message


def test_overlapping_ranges_of_one_model_are_refused() -> None:
    message = _errors(
        """
[[price]]
provider = "acme"
model = "m"
effective_from = 2026-01-01
input_mtok = "1"

[[price]]
provider = "acme"
model = "m"
effective_from = 2026-03-01
effective_to = 2026-04-01
input_mtok = "2"

[[price]]
provider = "acme"
model = "m"
effective_from = 2025-01-01
effective_to = 2026-01-01
input_mtok = "3"
"""
    )
    assert "price[1]: acme/m overlaps price[0]" in message
    assert "price[2]" not in message  # ends exactly when price[0] starts: adjacent, not overlapping


def test_an_override_for_gemini_prices_the_calls_recorded_as_google(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[[price]]\nprovider = "Gemini"\nmodel = "gemini-2.5-flash"\ninput_mtok = "9"\n')
    catalog = PriceCatalog.load(path)
    for provider in ("gemini", "google"):  # instrumented Gemini calls are recorded as google
        assert catalog.rate(Usage(input_tokens=10**6), provider=provider, model="gemini-2.5-flash").cost == D(
            9
        )
    twice = '[[price]]\nprovider = "{}"\nmodel = "m"\ninput_mtok = "1"\n'
    assert "overlaps price[0]" in _errors(twice.format("gemini") + twice.format("google"))


def test_every_error_is_reported_at_once() -> None:
    message = _errors(
        '[[price]]\nprovider = "a"\nmodel = "m"\ninput_mtok = "-1"\n\n[[price]]\nprovider = "a"\nx = 1\n'
    )
    assert message.startswith("prices.toml: 3 errors:")
    assert "price[0].input_mtok" in message
    assert "price[1].x" in message
    assert "price[1].model" in message
    assert "price[1]: no prices" not in message  # not piled on top of real errors


def test_bad_toml_unknown_top_level_and_unreadable_file(tmp_path: Path) -> None:
    assert "not valid TOML" in _errors("[[price]\n")
    assert "top: unknown top-level key" in _errors(
        'top = 1\n[[price]]\nprovider="a"\nmodel="m"\ninput_mtok=1\n'
    )
    with pytest.raises(ConfigError, match="cannot read price overrides"):
        load_overrides(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="cannot read"):  # ConfigError is a ValueError too
        PriceCatalog.load(tmp_path / "missing.toml")


def test_prices_stay_exact_and_strings_dates_and_offsets_are_accepted() -> None:
    overrides = parse_overrides(
        b"""
[[price]]
provider = "Acme"
model = "M"
effective_from = "2026-01-01T09:00:00+09:00"
effective_to = "2026-02-01"
input_mtok = 0.1
units = { calls = "0.000000000000000001" }
"""
    )
    (record,) = overrides.records
    assert record.provider == "acme"  # matched case-insensitively
    assert record.model == "m"
    assert record.prices["input_mtok"] == D("0.1")
    assert type(record.prices["input_mtok"]) is D
    assert record.units["calls"] == D("1E-18")
    assert record.effective_from == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert record.version == f"{overrides.source}:acme/m@2026-01-01"


def test_source_id_is_the_hash_of_the_file_contents() -> None:
    text = b'[[price]]\nprovider = "a"\nmodel = "m"\ninput_mtok = 1\n'
    assert parse_overrides(text).source == parse_overrides(text).source
    assert parse_overrides(text).source != parse_overrides(text + b"\n").source


def test_a_price_with_too_many_places_is_refused_and_a_cost_with_them_is_unpriced_not_lost() -> None:
    # An input_mtok of 31+ places passed `prices check`; its per-token price then had more places
    # than an event holds, and every call's event was refused (lost) after the provider billed it.
    with pytest.raises(ConfigError, match=r"input_mtok: has more than 30 decimal places"):
        parse_overrides(
            b'[[price]]\nprovider = "self-hosted"\nmodel = "m"\n'
            b'input_mtok = "0.0000000000000000000000000000001"\n',
            name="p.toml",
        )
    overrides = parse_overrides(
        b'[[price]]\nprovider = "self-hosted"\nmodel = "m"\n'
        b'units = { gpu_seconds = "0.000277777777777777777777777777777778" }\n',
        name="p.toml",
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    usage = Usage(units={"gpu_seconds": D("12.345")})  # a 36-place price x 3 places = 39 places
    rating = PriceCatalog(overrides).rate(usage, provider="self-hosted", model="m", at=at)
    assert not rating.priced and rating.cost is None
    assert rating.reason is not None and "more than 36 decimal places" in rating.reason
    two = Usage(units={"gpu_seconds": 2})
    whole = PriceCatalog(overrides).rate(two, provider="self-hosted", model="m", at=at)
    assert whole.cost == D("0.000555555555555555555555555555555556")


def test_an_entry_whose_price_version_no_event_could_hold_is_refused_at_load() -> None:
    # Every event rated with the record stores its version (at most 200 characters): an entry
    # that makes a longer one is a configuration error, not a refusal of every call at record time.
    model = "m" * 170
    data = (
        f'[[price]]\nprovider = "self-hosted"\nmodel = "{model}"\n'
        'effective_from = 2026-01-01T12:30:00Z\nunits = { gpu_seconds = "0.001" }\n'
    ).encode()
    with pytest.raises(ConfigError, match=r"price\[0\]: provider and model make a price_version of 226"):
        parse_overrides(data)
    fits = data.replace(model.encode(), b"m" * 140)
    [record] = parse_overrides(fits).records
    assert len(record.version) <= 200
