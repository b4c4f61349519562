"""Golden ratings, each computed by hand from the provider's published prices (USD per million tokens).

Every expected number below is worked out in the comment above it; the assertions compare exact
Decimals, so a single wrong digit fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from outlay._usage import Usage
from outlay.pricing import PriceCatalog, rate

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def test_gpt_4o_with_cached_input(genai: PriceCatalog) -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per MTok.
    # 10_000 input of which 4_000 cached -> 6_000 uncached.
    #   input      6_000 * 2.50 / 1e6 = 0.015
    #   cache_read 4_000 * 1.25 / 1e6 = 0.005
    #   output     1_500 * 10   / 1e6 = 0.015
    #   total                          0.035
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_500)
    rating = genai.rate(usage, provider="openai", model="gpt-4o", at=AT)
    assert rating.priced
    assert rating.cost == D("0.035")
    assert dict(rating.breakdown) == {"cache_read": D("0.005"), "input": D("0.015"), "output": D("0.015")}
    assert dict(rating.unit_prices) == {
        "cache_read": D("0.00000125"),
        "input": D("0.0000025"),
        "output": D("0.00001"),
    }
    assert rating.price_version == "genai-prices@0.2.3:openai/gpt-4o"
    # A dated model id resolves to the same record.
    dated = genai.rate(usage, provider="openai", model="gpt-4o-2024-08-06", at=AT)
    assert dated.cost == D("0.035")
    assert dated.price_version == "genai-prices@0.2.3:openai/gpt-4o"


def test_o3_reasoning_before_and_after_the_2025_06_10_price_cut(genai: PriceCatalog) -> None:
    # o3 output includes 4_000 reasoning tokens, billed at the output price (no separate price).
    usage = Usage(input_tokens=2_000, output_tokens=5_000, reasoning_tokens=4_000)
    # Before: $10 in / $40 out.  2_000*10/1e6 = 0.02 ; 5_000*40/1e6 = 0.2 ; total 0.22
    before = genai.rate(usage, provider="openai", model="o3", at=datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC))
    assert before.cost == D("0.22")
    assert dict(before.breakdown) == {"input": D("0.02"), "output": D("0.2")}
    assert before.price_version == "genai-prices@0.2.3:openai/o3"
    # From 2025-06-10 00:00 UTC: $2 in / $8 out.  2_000*2/1e6 = 0.004 ; 5_000*8/1e6 = 0.04 ; total 0.044
    after = genai.rate(usage, provider="openai", model="o3", at=datetime(2025, 6, 10, tzinfo=UTC))
    assert after.cost == D("0.044")
    assert dict(after.breakdown) == {"input": D("0.004"), "output": D("0.04")}
    assert after.price_version == "genai-prices@0.2.3:openai/o3@2025-06-10"


def test_o3_price_change_is_at_utc_midnight_whatever_the_callers_timezone(genai: PriceCatalog) -> None:
    from zoneinfo import ZoneInfo

    # 2025-06-10 01:00 in Berlin is 2025-06-09 23:00 UTC: still the old price.
    berlin = datetime(2025, 6, 10, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    usage = Usage(input_tokens=1_000_000)  # 1 MTok input: exactly the per-MTok price
    assert genai.rate(usage, provider="openai", model="o3", at=berlin).cost == D("10")


def test_claude_sonnet_4_5_cache_writes_5m_and_1h_and_cache_read(genai: PriceCatalog) -> None:
    # claude-sonnet-4-5 (<= 200k input): $3 in, $0.30 cache read, $3.75 5m write, $6 1h write, $15 out.
    # input 26_000 = 1_000 uncached + 20_000 read + 3_000 written 5m + 2_000 written 1h.
    #   input           1_000 * 3    / 1e6 = 0.003
    #   cache_read     20_000 * 0.30 / 1e6 = 0.006
    #   cache_write_5m  3_000 * 3.75 / 1e6 = 0.01125
    #   cache_write_1h  2_000 * 6    / 1e6 = 0.012
    #   output            800 * 15   / 1e6 = 0.012
    #   total                                0.04425
    usage = Usage(
        input_tokens=26_000,
        cache_read_tokens=20_000,
        cache_write_tokens=5_000,
        cache_write_1h_tokens=2_000,
        output_tokens=800,
    )
    rating = genai.rate(usage, provider="anthropic", model="claude-sonnet-4-5-20250929", at=AT)
    assert rating.cost == D("0.04425")
    assert dict(rating.breakdown) == {
        "cache_read": D("0.006"),
        "cache_write_5m": D("0.01125"),
        "cache_write_1h": D("0.012"),
        "input": D("0.003"),
        "output": D("0.012"),
    }
    assert rating.unit_prices["cache_write_1h"] == D("0.000006")
    assert rating.price_version == "genai-prices@0.2.3:anthropic/claude-sonnet-4-5"


def test_claude_sonnet_4_5_above_200k_input_pays_the_long_context_rate_on_every_token(
    genai: PriceCatalog,
) -> None:
    # > 200k input: $6 in, $0.60 read, $22.50 out — on all tokens, not only those past 200k.
    #   input      190_000 * 6    / 1e6 = 1.14
    #   cache_read  20_000 * 0.60 / 1e6 = 0.012
    #   output       1_000 * 22.5 / 1e6 = 0.0225
    #   total                             1.1745
    usage = Usage(input_tokens=210_000, cache_read_tokens=20_000, output_tokens=1_000)
    rating = genai.rate(usage, provider="anthropic", model="claude-sonnet-4-5", at=AT)
    assert rating.cost == D("1.1745")
    assert rating.breakdown["output"] == D("0.0225")


def test_gemini_2_5_pro_thoughts_below_and_above_the_200k_tier(genai: PriceCatalog) -> None:
    # Thoughts are output tokens (the extractor adds them in); gemini-2.5-pro has no separate price.
    # <= 200k input: $1.25 in, $10 out.  100_000*1.25/1e6 = 0.125 ; 3_000*10/1e6 = 0.03 ; total 0.155
    below = Usage(input_tokens=100_000, output_tokens=3_000, reasoning_tokens=2_000)
    assert genai.rate(below, provider="google", model="gemini-2.5-pro", at=AT).cost == D("0.155")
    # > 200k input: $2.50 in, $15 out.  250_000*2.5/1e6 = 0.625 ; 3_000*15/1e6 = 0.045 ; total 0.67
    above = Usage(input_tokens=250_000, output_tokens=3_000, reasoning_tokens=2_000)
    rating = genai.rate(above, provider="google", model="gemini-2.5-pro", at=AT)
    assert rating.cost == D("0.67")
    assert dict(rating.unit_prices) == {"input": D("0.0000025"), "output": D("0.000015")}
    # The tier starts *after* 200_000: exactly 200_000 is still base (200_000*1.25/1e6 = 0.25),
    # 200_001 is all at the tier price (200_001*2.5/1e6 = 0.5000025).
    at_edge = genai.rate(Usage(input_tokens=200_000), provider="google", model="gemini-2.5-pro", at=AT)
    past_edge = genai.rate(Usage(input_tokens=200_001), provider="google", model="gemini-2.5-pro", at=AT)
    assert at_edge.cost == D("0.25")
    assert past_edge.cost == D("0.5000025")


def test_text_embedding_3_small(genai: PriceCatalog) -> None:
    # $0.02 per MTok of input: 123_456 * 0.02 / 1e6 = 0.00246912
    rating = genai.rate(Usage(input_tokens=123_456), provider="openai", model="text-embedding-3-small", at=AT)
    assert rating.cost == D("0.00246912")
    assert dict(rating.breakdown) == {"input": D("0.00246912")}


def test_web_searches_are_priced_per_thousand(genai: PriceCatalog) -> None:
    # gpt-4o web search: $10 per 1,000 calls -> $0.01 each.
    #   input 1_000 * 2.5/1e6 = 0.0025 ; output 200 * 10/1e6 = 0.002 ; searches 3 * 0.01 = 0.03
    #   total 0.0345
    usage = Usage(input_tokens=1_000, output_tokens=200, web_searches=3)
    rating = genai.rate(usage, provider="openai", model="gpt-4o", at=AT)
    assert rating.cost == D("0.0345")
    assert rating.breakdown["web_searches"] == D("0.03")
    assert rating.unit_prices["web_searches"] == D("0.01")


def test_per_request_price_charges_one_request_per_rated_call(genai: PriceCatalog) -> None:
    # perplexity sonar: $1 in, $1 out per MTok, $12 per 1,000 requests.
    #   1_000 * 1/1e6 = 0.001 ; 500 * 1/1e6 = 0.0005 ; 1 request * 12/1000 = 0.012 ; total 0.0135
    usage = Usage(input_tokens=1_000, output_tokens=500)
    rating = genai.rate(usage, provider="perplexity", model="sonar", at=AT)
    assert rating.cost == D("0.0135")
    assert rating.breakdown["requests"] == D("0.012")
    # A batch that reports its request count is charged for that many: 4 * 0.012 = 0.048
    batch = Usage(input_tokens=1_000, output_tokens=500, units={"requests": D("4")})
    assert genai.rate(batch, provider="perplexity", model="sonar", at=AT).breakdown["requests"] == D("0.048")


def test_audio_tokens_at_their_own_price_when_the_model_has_one(genai: PriceCatalog) -> None:
    # gpt-4o-realtime-preview: text $5 in / $20 out, audio $40 in / $80 out per MTok.
    #   input        600 * 5  / 1e6 = 0.003      (1_000 input, 400 of them audio)
    #   input_audio  400 * 40 / 1e6 = 0.016
    #   output       200 * 20 / 1e6 = 0.004      (500 output, 300 of them audio)
    #   output_audio 300 * 80 / 1e6 = 0.024
    #   total                         0.047
    usage = Usage(input_tokens=1_000, input_audio_tokens=400, output_tokens=500, output_audio_tokens=300)
    rating = genai.rate(usage, provider="openai", model="gpt-4o-realtime-preview", at=AT)
    assert rating.cost == D("0.047")
    assert set(rating.breakdown) == {"input", "input_audio", "output", "output_audio"}
    # gpt-4o has no audio price: the audio tokens stay in the text buckets (1_000*2.5/1e6 + 500*10/1e6).
    plain = genai.rate(usage, provider="openai", model="gpt-4o", at=AT)
    assert plain.cost == D("0.0075")
    assert set(plain.breakdown) == {"input", "output"}


def test_unit_prices_are_the_price_of_one_token_exactly(genai: PriceCatalog) -> None:
    rating = genai.rate(Usage(input_tokens=1, output_tokens=1), provider="openai", model="o3", at=AT)
    assert rating.unit_prices["input"] * 1_000_000 == D("2")
    assert rating.cost == D("0.00001")  # 2/1e6 + 8/1e6


def test_module_level_rate_uses_the_given_catalog(genai: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    assert rate(usage, provider="openai", model="gpt-4o", at=AT, catalog=genai).cost == D("2.5")
    assert rate(usage, provider="openai", model="gpt-4o", at=AT).cost == D("2.5")
