"""Service tiers: a call is rated at the price of the tier that served it, or unpriced with the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from outlay._errors import ConfigError, InvalidUsage
from outlay._usage import Usage
from outlay.pricing import PriceCatalog, parse_overrides

NOW = datetime(2026, 12, 1, tzinfo=UTC)  # every tier price below is in force
BEFORE = datetime(2026, 10, 1, tzinfo=UTC)  # before genai-prices has OpenAI's priority prices
MTOK = 1_000_000


def tiered(tokens_in: int, tokens_out: int, tier: str | None, cached: int = 0) -> Usage:
    return Usage(
        input_tokens=tokens_in, cache_read_tokens=cached, output_tokens=tokens_out, service_tier=tier
    )


def test_priority_gpt_4o_is_rated_at_the_priority_price_and_names_it(genai: PriceCatalog) -> None:
    # $4.25 / $2.125 cached / $17 per million instead of $2.50 / $1.25 / $10:
    # 9_000 x 4.25 + 1_000 x 2.125 + 500 x 17 = 38_250 + 2_125 + 8_500 = 48_875 per million
    rating = genai.rate(
        tiered(10_000, 500, "priority", cached=1_000), provider="openai", model="gpt-4o", at=NOW
    )
    assert rating.priced
    assert rating.cost == D("0.048875")
    assert dict(rating.breakdown) == {
        "cache_read": D("0.002125"),
        "input": D("0.03825"),
        "output": D("0.0085"),
    }
    assert rating.unit_prices["input"] == D("0.00000425")
    assert rating.price_version == "genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority"
    standard = genai.rate(tiered(10_000, 500, None, cached=1_000), provider="openai", model="gpt-4o", at=NOW)
    assert standard.cost == D("0.02875") and standard.price_version == "genai-prices@0.2.3:openai/gpt-4o"


@pytest.mark.parametrize(
    ("provider", "model", "tier", "expected", "version"),
    [
        # gpt-5 flex: $0.625 / $5 per million: 2_000 x 0.625 + 1_000 x 5 = 6_250 per million
        ("openai", "gpt-5", "flex", D("0.00625"), "genai-prices@0.2.3:openai/gpt-5@2026-10-12#flex"),
        # claude-haiku-4-5 batch: $0.50 / $2.50 per million: 1_000 + 2_500
        ("anthropic", "claude-haiku-4-5", "batch", D("0.0035"), "@2026-10-14#batch"),
        # gemini-3.8-flash-tts priority: $0.90 / $16.20 per million: 1_800 + 16_200; flex $0.25 / $4.50
        ("google", "gemini-3.8-flash-tts", "priority", D("0.018"), "@2026-10-15#priority"),
        ("google", "gemini-3.8-flash-tts", "flex", D("0.005"), "@2026-10-15#flex"),
    ],
)
def test_flex_batch_and_priority_prices_of_each_provider(
    genai: PriceCatalog, provider: str, model: str, tier: str, expected: D, version: str
) -> None:
    rating = genai.rate(tiered(2_000, 1_000, tier), provider=provider, model=model, at=NOW)
    assert rating.cost == expected
    assert rating.price_version.endswith(version)
    # The same number genai-prices computes for that request context, to the last digit.
    context = {"processing": "batch"} if tier == "batch" else {"service_tier": tier}
    theirs = calc_price(
        GenaiUsage(input_tokens=2_000, output_tokens=1_000),
        model,
        provider_id=provider,
        genai_request_timestamp=NOW,
        price_context=context,
    )
    assert theirs.total_price == expected


@pytest.mark.parametrize("standard", [None, "standard", "default", "auto", "DEFAULT", " Standard "])
def test_the_standard_tier_under_any_name_is_rated_as_before(
    genai: PriceCatalog, standard: str | None
) -> None:
    usage = tiered(10_000, 500, standard)
    assert usage.service_tier is None
    assert usage == tiered(10_000, 500, None)
    rating = genai.rate(usage, provider="openai", model="gpt-4o", at=NOW)
    assert rating.cost == D("0.03") and rating.price_version == "genai-prices@0.2.3:openai/gpt-4o"


def test_a_variant_only_replaces_the_keys_it_prices(genai: PriceCatalog) -> None:
    # gpt-4o priority has no web search price of its own: searches keep the standard $10 per 1,000.
    rating = genai.rate(
        Usage(input_tokens=1_000, web_searches=2, service_tier="priority"),
        provider="openai",
        model="gpt-4o",
        at=NOW,
    )
    assert dict(rating.breakdown) == {"input": D("0.00425"), "web_searches": D("0.02")}


def test_a_dated_model_id_gets_the_variant_of_its_model(genai: PriceCatalog) -> None:
    rating = genai.rate(tiered(MTOK, 0, "priority"), provider="openai", model="gpt-4o-2024-08-06", at=NOW)
    assert rating.cost == D("4.25")


def test_priority_with_no_price_in_force_is_unpriced_not_standard(genai: PriceCatalog) -> None:
    # Before 2026-10-12 genai-prices has no priority price for gpt-4o: the standard one would
    # record the call at ~60% of what it cost, so it is unpriced with a reason naming the tier.
    rating = genai.rate(tiered(10_000, 500, "priority"), provider="openai", model="gpt-4o", at=BEFORE)
    assert not rating.priced and rating.cost is None
    assert rating.reason == (
        "no 'priority' service tier price for openai/gpt-4o at 2026-10-01T00:00:00+00:00 in genai-prices"
        " 0.2.3 or overrides (the call was served at that tier; its standard price is not what it cost):"
        ' give one in an overrides file with service_tier = "priority"'
    )
    # Anthropic's priority tier and OpenAI's scale tier have no price in the pinned data at all.
    for provider, model, tier in (
        ("anthropic", "claude-haiku-4-5", "priority"),
        ("openai", "gpt-4o", "scale"),
    ):
        rating = genai.rate(tiered(10, 5, tier), provider=provider, model=model, at=NOW)
        assert (
            rating.cost is None and rating.reason is not None and f"no {tier!r} service tier" in rating.reason
        )
    # An unknown model stays "no price for ..." whatever the tier.
    rating = genai.rate(tiered(10, 5, "priority"), provider="openai", model="gpt-9", at=NOW)
    assert rating.reason == "no price for openai/gpt-9 in genai-prices 0.2.3 or overrides"


def test_a_fallback_providers_model_gets_no_variant(genai: PriceCatalog) -> None:
    # genai-prices applies variants only to the provider's own models, never through a fallback.
    standard = genai.rate(tiered(10, 5, None), provider="azure", model="gpt-4o", at=NOW)
    if standard.cost is None:  # pragma: no cover - depends on the pinned data having the fallback
        pytest.skip("no azure fallback for gpt-4o in the pinned data")
    assert genai.rate(tiered(10, 5, "priority"), provider="azure", model="gpt-4o", at=NOW).cost is None


TIER_OVERRIDES = """\
[[price]]
provider = "openai"
model = "gpt-4o"
service_tier = "scale"
input_mtok = "3"
output_mtok = "12"

[[price]]
provider = "anthropic"
model = "claude-haiku-4-5"
service_tier = "priority"
effective_from = 2026-06-01
input_mtok = "1.75"
output_mtok = "8.75"

[[price]]
provider = "anthropic"
model = "claude-haiku-4-5"
input_mtok = "0.9"
output_mtok = "4.5"
"""


def test_overrides_price_a_tier_and_an_untiered_override_still_wins_for_every_tier() -> None:
    catalog = PriceCatalog(parse_overrides(TIER_OVERRIDES.encode(), name="tiers.toml"))
    assert catalog.overrides is not None
    source = catalog.overrides.source
    scale = catalog.rate(tiered(MTOK, MTOK, "scale"), provider="openai", model="gpt-4o", at=NOW)
    assert scale.cost == D("15") and scale.price_version == f"{source}:openai/gpt-4o#scale"
    # The scale entry prices scale calls only: priority and standard gpt-4o are genai-prices'.
    assert catalog.rate(tiered(MTOK, 0, "priority"), provider="openai", model="gpt-4o", at=NOW).cost == D(
        "4.25"
    )
    assert catalog.rate(tiered(MTOK, 0, None), provider="openai", model="gpt-4o", at=NOW).cost == D("2.5")
    # claude-haiku-4-5: the priority entry for priority, the untiered one for standard and for
    # batch (an override replaces genai-prices' prices for every call, as documented).
    rate = catalog.rate
    priority = rate(tiered(MTOK, 0, "priority"), provider="anthropic", model="claude-haiku-4-5", at=NOW)
    assert priority.cost == D("1.75")
    assert priority.price_version == f"{source}:anthropic/claude-haiku-4-5@2026-06-01#priority"
    for tier in (None, "batch"):
        other = rate(tiered(MTOK, 0, tier), provider="anthropic", model="claude-haiku-4-5", at=NOW)
        assert other.cost == D("0.9") and other.price_version == f"{source}:anthropic/claude-haiku-4-5"
    # Before the priority entry starts, the untiered override prices priority calls too.
    early = rate(
        tiered(MTOK, 0, "priority"),
        provider="anthropic",
        model="claude-haiku-4-5",
        at=BEFORE.replace(month=5),
    )
    assert early.cost == D("0.9")
    resolved = catalog.resolve("anthropic", "claude-haiku-4-5", NOW, service_tier="Priority")
    assert resolved is not None and resolved.service_tier == "priority"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('service_tier = "default"', "'default' is the standard tier: leave service_tier out for it"),
        ("service_tier = 3", "expected a tier name such as 'priority', got 3"),
        (f'service_tier = "{"p" * 40}"', "expected a tier name such as 'priority'"),
    ],
)
def test_a_bad_override_tier_is_a_config_error(entry: str, message: str) -> None:
    text = f'[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\n{entry}\ninput_mtok = "1"\n'
    with pytest.raises(ConfigError, match="price\\[0\\].service_tier: " + message):
        parse_overrides(text.encode(), name="bad.toml")


@pytest.mark.parametrize("written", ["Priority", " PRIORITY ", "priority"])
def test_an_override_tier_is_named_in_any_case_as_usage_names_it(written: str) -> None:
    # A response's "Priority" is rated as "priority"; the overrides file names tiers the same way
    # (it refused "Priority" with "expected a tier name", though Usage accepts it).
    text = f'[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "{written}"\ninput_mtok = "9"\n'
    catalog = PriceCatalog(parse_overrides(text.encode(), name="case.toml"))
    rating = catalog.rate(tiered(MTOK, 0, "Priority"), provider="openai", model="gpt-4o", at=NOW)
    assert rating.cost == D("9") and rating.price_version.endswith("openai/gpt-4o#priority")


def test_a_standard_tier_in_any_case_is_named_as_the_standard_tier_in_an_override() -> None:
    text = '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "Default"\ninput_mtok = "1"\n'
    with pytest.raises(ConfigError, match="'default' is the standard tier: leave service_tier out for it"):
        parse_overrides(text.encode(), name="bad.toml")


def test_overlaps_are_checked_per_tier() -> None:
    two_tiers = TIER_OVERRIDES.replace('service_tier = "scale"', 'service_tier = "priority"')
    parse_overrides(two_tiers.encode())  # a priority and an untiered entry for one model: fine
    same = (
        TIER_OVERRIDES
        + '\n[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "scale"\ninput_mtok = "1"\n'
    )
    with pytest.raises(ConfigError, match=r"openai/gpt-4o \(service_tier scale\) overlaps price\[0\]"):
        parse_overrides(same.encode())


@pytest.mark.parametrize(
    "bad",
    [3, b"priority", "x" * 10_000, "pri ority", "", "priorité"],
)
def test_a_bad_tier_on_usage_is_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidUsage, match=r"^service_tier: must be") as caught:
        Usage(input_tokens=1, service_tier=bad)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 200  # a huge value is not echoed whole


def test_usage_of_two_tiers_does_not_add_up() -> None:
    assert (tiered(1, 1, "flex") + tiered(2, 2, "flex")).service_tier == "flex"
    with pytest.raises(InvalidUsage, match="service_tier: cannot add usage served at service tier 'flex'"):
        tiered(1, 1, "flex") + tiered(2, 2, None)


def test_a_warm_tier_rating_is_a_cache_hit(genai: PriceCatalog) -> None:
    usage = tiered(10, 5, "priority")
    genai.rate(usage, provider="openai", model="gpt-4o", at=NOW)
    before = genai._timeline.cache_info()  # type: ignore[attr-defined]
    genai.rate(usage, provider="openai", model="gpt-4o", at=NOW)
    after = genai._timeline.cache_info()  # type: ignore[attr-defined]
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_the_estimate_of_a_request_asking_for_a_tier_is_the_worse_of_it_and_standard(
    genai: PriceCatalog,
) -> None:
    def estimate(provider: str, model: str, tier: str | None) -> D | None:
        return genai.estimate(
            provider=provider,
            model=model,
            input_tokens=MTOK,
            max_output_tokens=MTOK,
            at=NOW,
            service_tier=tier,
        )

    # gpt-4o priority: $4.25 + $17 for a million of each, not the standard $2.50 + $10.
    assert estimate("openai", "gpt-4o", "Priority") == D("21.25")
    assert estimate("openai", "gpt-4o", None) == D("12.5")
    # flex may be served at standard, so standard stays the worst case; a tier with no price
    # (Anthropic's priority) leaves the standard estimate, as before tiers were read.
    assert estimate("openai", "gpt-5", "flex") == estimate("openai", "gpt-5", None)
    assert estimate("anthropic", "claude-haiku-4-5", "priority") == D("6")
