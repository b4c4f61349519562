"""``outlay prices show`` and ``outlay prices check``, through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from outlay.cli._prices import prices


def test_show_prints_the_dated_history_of_o3() -> None:
    result = CliRunner().invoke(prices, ["show", "o3", "--provider", "openai"])
    assert result.exit_code == 0, result.output
    assert "genai-prices@0.2.3:openai/o3@2025-06-10" in result.output
    assert "genai-prices@0.2.3:openai/o3 " in result.output
    assert "input_mtok = $10" in result.output
    assert "input_mtok = $2" in result.output
    assert "input: $0.000002" in result.output  # the price of one token


def test_show_guesses_the_provider_and_prints_tiers() -> None:
    result = CliRunner().invoke(prices, ["show", "claude-sonnet-4-5"])
    assert result.exit_code == 0, result.output
    assert "anthropic/claude-sonnet-4-5" in result.output
    assert "$6 above 200,000 input tokens" in result.output


def test_show_json_includes_overrides_with_their_source(overrides_file: Path) -> None:
    result = CliRunner().invoke(
        prices, ["show", "gpt-4o", "--overrides", str(overrides_file), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["source"].split("@")[0] for r in records] == ["genai-prices", "overrides"]
    override = records[1]
    assert override["effective_from"] == "2026-03-01T00:00:00Z"
    assert override["effective_to"] == "2026-09-01T00:00:00Z"
    assert override["prices"]["input_mtok"] == "2"
    assert override["unit_prices"]["input"] == "0.000002"  # strings: exact, never floats
    assert records[0]["prices"]["cache_read_mtok"] == "1.25"


def test_show_a_custom_unit_model_from_overrides(overrides_file: Path) -> None:
    result = CliRunner().invoke(prices, ["show", "llama-3.1-70b", "--overrides", str(overrides_file)])
    assert result.exit_code == 0, result.output
    assert "self-hosted/llama-3.1-70b@2026-01-01" in result.output
    assert "unit:gpu_seconds: $0.00125" in result.output


def test_show_unknown_model_fails_clearly() -> None:
    result = CliRunner().invoke(prices, ["show", "gpt-9", "--provider", "openai"])
    assert result.exit_code == 1
    assert "no price for openai/gpt-9 in genai-prices@0.2.3" in result.output
    result = CliRunner().invoke(prices, ["show", "no-such-model-anywhere"])
    assert result.exit_code == 1
    assert "pass --provider" in result.output


def test_show_with_a_broken_overrides_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[price]]\nprovider = "a"\nmodel = "m"\ninput_mtok = "-1"\n')
    result = CliRunner().invoke(prices, ["show", "gpt-4o", "--overrides", str(bad)])
    assert result.exit_code == 1
    assert "price[0].input_mtok: amount must not be negative" in result.output


def test_check_ok_prints_the_record_count(overrides_file: Path) -> None:
    result = CliRunner().invoke(prices, ["check", str(overrides_file)])
    assert result.exit_code == 0
    assert result.output.startswith(f"OK: {overrides_file}: 3 price records (overrides@")


def test_check_the_shipped_example_file() -> None:
    example = Path(__file__).parents[2] / "examples" / "prices.toml"
    result = CliRunner().invoke(prices, ["check", str(example)])
    assert result.exit_code == 0, result.output


def test_check_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[price]]\nprovider = "a"\nmodel = "m"\ninput_mtok = "-1"\nwhen = 3\n'
        '[[price]]\nprovider = "a"\nmodel = "m"\neffective_from = 2026-01-01\noutput_mtok = 1\n'
    )
    result = CliRunner().invoke(prices, ["check", str(bad)])
    assert result.exit_code == 1
    assert "price[0].input_mtok" in result.output
    assert "price[0].when: unknown key" in result.output
    assert "3 errors" not in result.output
    assert "2 errors" in result.output
    missing = CliRunner().invoke(prices, ["check", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1
    assert "cannot read price overrides" in missing.output


def test_registered_on_the_root_command() -> None:
    from outlay.cli import main

    result = CliRunner().invoke(main, ["prices", "check", "--help"])
    assert result.exit_code == 0
    assert "Validate a price overrides FILE" in result.output


def test_show_prints_a_note_that_looks_like_markup_as_written(tmp_path: Path) -> None:
    """A note is the user's text: "[/]" or "[bold]" in it is shown as written, never a crash."""
    path = tmp_path / "prices.toml"
    path.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "x1"\neffective_from = 2020-01-01\n'
        'input_mtok = "0.1"\noutput_mtok = "0.3"\nnote = "[/] per [bold]contract[/bold] 7"\n'
    )
    result = CliRunner().invoke(prices, ["show", "x1", "-p", "acme", "--overrides", str(path)])
    assert result.exit_code == 0, result.output
    assert "[/] per [bold]contract[/bold] 7" in result.output


def test_show_a_service_tiers_prices_and_name_the_tiers_priced() -> None:
    # A priority call is rated at genai-prices' priority variant: the table a user checks must show
    # it, and the standard table must say which other tiers have prices of their own.
    standard = CliRunner().invoke(prices, ["show", "gpt-4o"])
    assert standard.exit_code == 0, standard.output
    assert "Also priced at service tiers batch, fast, priority" in standard.output
    priority = CliRunner().invoke(prices, ["show", "gpt-4o", "--tier", " Priority "])
    assert priority.exit_code == 0, priority.output
    assert "at the 'priority' service tier" in priority.output
    assert "genai-prices@0.2.3:openai/gpt-4o@2026-10-12#priority" in priority.output
    assert "input_mtok = $4.25" in priority.output and "output: $0.000017" in priority.output
    assert "Also priced at service tiers batch, fast:" in priority.output
    batch = CliRunner().invoke(prices, ["show", "gpt-4o", "--tier", "batch", "--format", "json"])
    records = json.loads(batch.output)
    assert {r["service_tier"] for r in records} == {"batch"}
    assert records[-1]["prices"]["input_mtok"] == "1.25"
    # "default" is the standard tier: the standard table.
    default = CliRunner().invoke(prices, ["show", "gpt-4o", "--tier", "default", "--format", "json"])
    assert {r["service_tier"] for r in json.loads(default.output)} == {None}


def test_show_a_tier_with_no_price_or_a_bad_name_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(prices, ["show", "claude-sonnet-4-5", "--tier", "priority"])
    assert result.exit_code == 1
    assert "no 'priority' service tier price for anthropic/claude-sonnet-4-5" in result.output
    assert "recorded unpriced (tiers priced: batch)" in result.output
    result = CliRunner().invoke(prices, ["show", "gpt-4o", "--tier", "no such tier!"])
    assert result.exit_code == 1 and "service_tier" in result.output
    # An override of the tier gives it a price, and the table then lists it.
    overrides = tmp_path / "tiers.toml"
    overrides.write_text(
        '[[price]]\nprovider = "anthropic"\nmodel = "claude-sonnet-4-5"\nservice_tier = "priority"\n'
        'input_mtok = "6"\noutput_mtok = "30"\n'
    )
    result = CliRunner().invoke(
        prices, ["show", "claude-sonnet-4-5", "--tier", "priority", "--overrides", str(overrides)]
    )
    assert result.exit_code == 0, result.output
    assert "input_mtok = $6" in result.output
    listed = CliRunner().invoke(prices, ["show", "claude-sonnet-4-5", "--overrides", str(overrides)])
    assert "Also priced at service tiers batch, priority" in listed.output


def test_show_a_tier_marks_genai_prices_it_never_uses_under_an_untiered_override(tmp_path: Path) -> None:
    # An override with no service_tier replaces genai-prices' prices for every call, priority ones
    # included: a priority gpt-4o call from March 2026 is rated at $2/$8, never at genai-prices'
    # priority $4.25/$17. The table a user checks must not present that price as the one in force
    # from its date, and the tiers listed must be those with prices of their own that rate calls.
    overrides = tmp_path / "deal.toml"
    overrides.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\neffective_from = 2026-03-01\n'
        'input_mtok = "2"\noutput_mtok = "8"\n'
    )
    from outlay.pricing import PriceCatalog

    catalog = PriceCatalog.load(overrides)
    assert "priority" not in catalog.tiers("openai", "gpt-4o")  # its own price never rates a call
    shown = CliRunner().invoke(
        prices, ["show", "gpt-4o", "--tier", "priority", "--overrides", str(overrides), "--format", "json"]
    )
    assert shown.exit_code == 0, shown.output
    records = {r["source"].split("@")[0]: r for r in json.loads(shown.output)}
    assert records["overrides"]["in_force"] is True and records["genai-prices"]["in_force"] is False
    args = ["show", "gpt-4o", "--tier", "priority", "--overrides", str(overrides)]
    table = CliRunner().invoke(prices, args)
    assert table.exit_code == 0, table.output
    assert "never in force" in table.output
    standard = CliRunner().invoke(prices, ["show", "gpt-4o", "--overrides", str(overrides)])
    assert "priority" not in standard.output.split("Also priced at service tiers")[-1].split(":")[0]
