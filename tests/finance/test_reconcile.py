"""Reconciliation of the ledger with a provider's usage or cost export: exact money, every shape,
rows on one side only, and a malformed export named by line and column."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from outlay._errors import InvalidInput
from outlay._usage import Usage
from outlay.finance import Reconciliation, model_key, parse_provider_csv, reconcile
from outlay.ledger import InMemoryLedger

from .conftest import MARCH, D, event

DAY = timedelta(days=1)
# 2026-03-10 and 2026-03-11 at 00:00 UTC, as OpenAI writes start_time
T10, T11 = "1773100800", "1773187200"


def rows_by(result: Reconciliation) -> dict[tuple[str, str | None], dict[str, object]]:
    return {(r["day"], r["model"]): r for r in result.to_json()["rows"]}


@pytest.fixture
def ledger(ledger: InMemoryLedger) -> InMemoryLedger:
    ledger.write([
        # openai on the 10th: gpt-4o snapshot 3 x 0.10 (one of them staging), gpt-4o-mini 0.02
        event(model="gpt-4o-2024-08-06"),
        event(model="gpt-4o-2024-08-06", tenant_id="globex"),
        event(model="gpt-4o-2024-08-06", environment="staging"),
        event(model="gpt-4o-mini", cost=D("0.02")),
        # the 11th: gpt-4o 0.10, and a model only we know about
        event(time=MARCH + DAY, model="gpt-4o"),
        event(time=MARCH + DAY, model="gpt-4.1", cost=D("0.000000000000000001")),
        # anthropic and a budget decision: never part of openai's reconciliation
        event(provider="anthropic", model="claude-sonnet-4-20250514", cost=D("1.5"),
              usage=Usage(input_tokens=2000, cache_read_tokens=500, output_tokens=100)),
        event(operation="decision:denied", model="gpt-4o", cost=D("0"), usage=Usage()),
    ])  # fmt: skip
    return ledger


OPENAI_COSTS = f"""start_time,end_time,amount_value,amount_currency,line_item,project_id,organization_id
{T10},{T11},0.2,usd,"gpt-4o-2024-08-06, input",proj_1,org_1
{T10},{T11},0.1,usd,"gpt-4o-2024-08-06, output",proj_1,org_1
{T10},{T11},0.02,usd,"gpt-4o-mini-2024-07-18, input",proj_1,org_1
{T11},1773273600,0.25,usd,"gpt-4o-2024-08-06, input",proj_1,org_1
{T11},1773273600,0.004,usd,"dall-e-3, image",proj_1,org_1
"""


def test_openai_cost_export_against_the_ledger(ledger: InMemoryLedger) -> None:
    result = reconcile(ledger, "openai", OPENAI_COSTS)
    assert (result.shape, result.start, result.end) == ("openai-costs", date(2026, 3, 10), date(2026, 3, 12))
    rows = rows_by(result)
    assert set(rows) == {("2026-03-10", "gpt-4o"), ("2026-03-10", "gpt-4o-mini"), ("2026-03-11", "gpt-4o"),
                         ("2026-03-11", "gpt-4.1"), ("2026-03-11", "dall-e-3")}  # fmt: skip
    # every environment and tenant counts: the provider bills them all
    same = rows[("2026-03-10", "gpt-4o")]
    assert (same["status"], same["ours_cost"], same["theirs_cost"], same["drift"]) == (
        "match",
        "0.3",
        "0.3",
        "0",
    )
    assert same["ours_models"] == ["gpt-4o-2024-08-06"] and same["theirs_models"] == ["gpt-4o-2024-08-06"]
    assert rows[("2026-03-10", "gpt-4o-mini")]["status"] == "match"
    # the provider billed 0.25 where we metered 0.10: drift is ours - theirs, in percent of theirs
    under = rows[("2026-03-11", "gpt-4o")]
    assert (under["status"], under["drift"], under["drift_pct"]) == ("drift", "-0.15", "-60.00")
    only_ours = rows[("2026-03-11", "gpt-4.1")]
    assert (only_ours["status"], only_ours["drift"], only_ours["theirs_cost"]) == (
        "ours_only", "0.000000000000000001", None)  # fmt: skip
    only_theirs = rows[("2026-03-11", "dall-e-3")]
    assert (only_theirs["status"], only_theirs["ours_cost"], only_theirs["drift"]) == (
        "theirs_only", None, "-0.004")  # fmt: skip
    # totals are exact sums: no float ever touched them
    assert result.ours_cost == D("0.420000000000000001") and result.theirs_cost == D("0.574")
    assert result.drift == D("-0.153999999999999999")
    summary = result.to_json()
    assert summary["counts"] == {"match": 2, "drift": 1, "unpriced": 0, "ours_only": 1, "theirs_only": 1}
    assert summary["lines"] == 5 and summary["skipped_lines"] == 0


def test_amounts_are_summed_exactly_and_tolerance_decides_a_match(ledger: InMemoryLedger) -> None:
    # ten lines of 0.03 are exactly 0.3 (floats would make it 0.30000000000000004)
    lines = "".join(f'{T10},{T11},0.03,usd,"gpt-4o-2024-08-06, input"\n' for _ in range(10))
    export = "start_time,end_time,amount_value,amount_currency,line_item\n" + lines
    row = rows_by(reconcile(ledger, "openai", export))[("2026-03-10", "gpt-4o")]
    assert (row["theirs_cost"], row["drift"], row["status"]) == ("0.3", "0", "match")
    off_by_a_cent = export.replace("0.03,", "0.031,", 1)
    loose = rows_by(reconcile(ledger, "openai", off_by_a_cent))[("2026-03-10", "gpt-4o")]
    assert (loose["drift"], loose["status"]) == ("-0.001", "match")
    strict = rows_by(reconcile(ledger, "openai", off_by_a_cent, tolerance="0"))[("2026-03-10", "gpt-4o")]
    assert strict["status"] == "drift"


def test_window_and_environment(ledger: InMemoryLedger) -> None:
    result = reconcile(ledger, "openai", OPENAI_COSTS, start="2026-03-10", end="2026-03-11")
    assert {day for day, _ in rows_by(result)} == {"2026-03-10"}
    assert (result.lines, result.skipped_lines) == (5, 2)
    production = reconcile(ledger, "openai", OPENAI_COSTS, end="2026-03-11", environment="production")
    row = rows_by(production)[("2026-03-10", "gpt-4o")]
    assert (row["ours_cost"], row["status"], row["ours_events"]) == ("0.2", "drift", 2)


def test_unpriced_events_make_our_side_a_lower_bound(ledger: InMemoryLedger) -> None:
    ledger.write([event(model="gpt-4o-2024-08-06", priced=False)])
    row = rows_by(reconcile(ledger, "openai", OPENAI_COSTS, tolerance="0"))[("2026-03-10", "gpt-4o")]
    # even where the priced part already matches: the unpriced event will add to it
    assert (row["status"], row["ours_unpriced_events"], row["ours_cost"], row["drift"]) == (
        "unpriced", 1, "0.3", "0")  # fmt: skip
    assert reconcile(ledger, "openai", "date,model,cost\n2026-03-12,o3,1\n").rows[0].status == "theirs_only"
    ledger.write([event(time=MARCH + 2 * DAY, model="o3", priced=False)])
    row = rows_by(reconcile(ledger, "openai", "date,model,cost\n2026-03-12,o3,1\n"))[("2026-03-12", "o3")]
    assert (row["status"], row["drift"], row["ours_cost"]) == ("unpriced", None, None)


def test_anthropic_cost_export_with_display_names(ledger: InMemoryLedger) -> None:
    export = (
        "usage_date_utc,model,workspace,api_key,usage_type,context_window,token_type,cost_usd,list_price_usd,"
        "cost_type,inference_geo,speed,api_key_id,api_key_status\n"
        "2026-03-10,Claude Sonnet 4,Default,k,message,≤ 200k,input_no_cache,1.2,1.2,token,us,,key_1,active\n"
        "2026-03-10,Claude Sonnet 4,Default,k,message,≤ 200k,output,0.3,0.3,token,us,,key_1,active\n"
        "2026-03-10,,Default,k,message,,,0.01,0.01,web_search,us,,apikey_1,active\n"
    )
    result = reconcile(ledger, "anthropic", export.encode())
    rows = rows_by(result)
    assert result.shape == "anthropic-cost"
    sonnet = rows[("2026-03-10", "claude-sonnet-4")]
    assert (sonnet["status"], sonnet["ours_cost"], sonnet["theirs_cost"]) == ("match", "1.5", "1.5")
    assert sonnet["theirs_models"] == ["Claude Sonnet 4"]
    assert sonnet["ours_models"] == ["claude-sonnet-4-20250514"]
    assert rows[("2026-03-10", None)]["status"] == "theirs_only"  # costs with no model (web search)


def test_token_only_exports_compare_tokens(ledger: InMemoryLedger) -> None:
    anthropic = (
        "usage_date_utc,model_version,api_key,workspace,usage_type,context_window,usage_input_tokens_no_cache,"
        "usage_input_tokens_cache_write_5m,usage_input_tokens_cache_write_1h,usage_input_tokens_cache_read,"
        "usage_output_tokens,web_search_count,inference_geo,speed\n"
        "2026-03-10,claude-sonnet-4-20250514,k,Default,message,≤ 200k,1500,,0,500,100,0,us,\n"
    )
    result = reconcile(ledger, "anthropic", anthropic)
    (row,) = result.to_json()["rows"]
    assert result.shape == "anthropic-usage" and result.theirs_cost is None
    assert (row["status"], row["ours_tokens"], row["theirs_tokens"], row["token_drift"]) == (
        "match",
        2100,
        2100,
        0,
    )
    assert row["drift"] is None and result.to_json()["drift"] is None
    openai = (
        "start_time,end_time,model,input_tokens,output_tokens,num_model_requests\n"
        f"{T10},{T11},gpt-4o,3000,1499,3\n"
    )
    row = rows_by(reconcile(ledger, "openai", openai))[("2026-03-10", "gpt-4o")]
    assert (row["status"], row["token_drift"]) == ("drift", 1)


MAPPED = "Day,Model,Spend\n2026-03-10,gpt-4o-mini,0.02\n"


def test_generic_export_and_a_column_map(ledger: InMemoryLedger) -> None:
    generic = "date,model,cost,tokens\n2026-03-10T00:00:00Z,gpt-4o-mini,0.02,1500\n"
    row = rows_by(reconcile(ledger, "openai", generic))[("2026-03-10", "gpt-4o-mini")]
    assert (row["status"], row["token_drift"]) == ("match", 0)
    result = reconcile(ledger, "openai", MAPPED, columns="date=Day, model=Model, cost=Spend")
    assert result.shape == "generic" and rows_by(result)[("2026-03-10", "gpt-4o-mini")]["status"] == "match"
    as_dict = reconcile(ledger, "openai", MAPPED, columns={"date": "Day", "model": "Model", "cost": "Spend"})
    assert as_dict.rows == result.rows


def test_model_key() -> None:
    assert model_key("Claude Sonnet 4") == model_key("claude-sonnet-4-20250514") == "claude-sonnet-4"
    assert model_key("Claude 3.5 Sonnet") == model_key("claude-3-5-sonnet-latest") == "claude-3-5-sonnet"
    assert model_key("gpt-4o-2024-08-06") == "gpt-4o" != model_key("gpt-4o-mini-2024-07-18")
    assert model_key("gpt-4.1") == "gpt-4.1"
    assert model_key("  ") is None and model_key(None) is None


BAD = "start_time,amount_value,line_item\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (BAD + f'{T10},0.1,"gpt-4o, input"\n{T10},abc,"gpt-4o, input"\n', "line 3, column 'amount_value'"),
        (BAD + f'{T10},NaN,"gpt-4o, input"\n', "line 2, column 'amount_value'"),
        (BAD + f'{T10},,"gpt-4o, input"\n', "line 2, column 'amount_value': the amount is empty"),
        (BAD + f'{T10},1e999999,"gpt-4o, input"\n', "line 2, column 'amount_value': out of range"),
        (BAD + f'{T10},1e-31,"gpt-4o, input"\n', "line 2, column 'amount_value': out of range"),
        (
            BAD + f'{T10},0.1,"gpt-4o, input"\n\nyesterday,0.1,"gpt-4o, input"\n',
            "line 4, column 'start_time'",
        ),
        (BAD + '1999-12-31,0.1,"gpt-4o, input"\n', "line 2, column 'start_time': a date between 2000"),
        (BAD + f"{T10},0.1,\n", "line 2, column 'line_item': empty"),
        (BAD + f"{T10},0.1\n", "line 2: 2 cells, but the header has 3"),
        (BAD + f'{T10},0.1,"gpt-4o, input\n', "line 2: not valid CSV"),
        (
            f'start_time,amount_value,line_item,amount_currency\n{T10},0.1,"gpt-4o, in",eur\n',
            "line 2, column 'amount_currency': only USD",
        ),
        ("date,model,cost,tokens\n2026-03-10,gpt-4o,1,-5\n", "line 2, column 'tokens': a whole"),
        ("date,model,cost,tokens\n2026-03-10,gpt-4o,1,1.5\n", "line 2, column 'tokens': a whole"),
        (
            "day,what,amount\n2026-03-10,gpt-4o,1\n",
            "line 1: the header (day, what, amount) is no known export",
        ),
        (
            "usage_date_utc,model,cost_usd\n2026-03-10,Claude Sonnet 4,1\n",
            "this is the anthropic-cost export",
        ),
        ("", "the export is empty"),
        ("\n\n", "the export is empty"),
        (b"date,model,cost\n2026-03-10,gpt-4o,\xff\n", "not UTF-8"),
    ],
)
def test_malformed_export_names_line_and_column(
    ledger: InMemoryLedger, data: str | bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        reconcile(ledger, "openai", data)
    assert info.value.field == "csv"
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"provider": "Open AI!"}, "provider", "provider name"),
        ({"start": "2026-03-11", "end": "2026-03-10"}, "to", "must be after from"),
        ({"start": "10/03/2026"}, "from", "a date like"),
        ({"end": "2026-03-10T12:00"}, "to", "a date like"),
        ({"tolerance": "-1"}, "tolerance", "negative"),
        ({"tolerance": "a lot"}, "tolerance", "not a decimal"),
        ({"tolerance": "1e999999"}, "tolerance", "below 10^15"),
        ({"columns": "date=Day,model"}, "columns", "name=Header"),
        ({"columns": "date=Day,cents=Spend"}, "columns", "unknown name 'cents'"),
        ({"columns": "date=Day,cost=Spend"}, "columns", "map date, model"),
        ({"columns": "date=Day,model=Model,cost=Amount"}, "csv", "column 'Amount': not in the header"),
    ],
)
def test_bad_arguments_are_named(
    ledger: InMemoryLedger, kwargs: dict[str, Any], field: str, message: str
) -> None:
    data = MAPPED if "columns" in kwargs else OPENAI_COSTS
    provider = kwargs.pop("provider", "openai")
    with pytest.raises(InvalidInput) as info:
        reconcile(ledger, provider, data, **kwargs)
    assert info.value.field == field and message in str(info.value)


def test_an_empty_export_needs_a_window(ledger: InMemoryLedger) -> None:
    with pytest.raises(InvalidInput, match="no rows"):
        reconcile(ledger, "openai", "date,model,cost\n")
    ours = reconcile(ledger, "openai", "date,model,cost\n", start="2026-03-10", end="2026-03-12")
    assert {r.status for r in ours.rows} == {"ours_only"} and ours.theirs_cost == Decimal(0)


def test_parse_provider_csv_keeps_the_shape_and_days() -> None:
    export = parse_provider_csv(OPENAI_COSTS.encode("utf-8-sig"), "OpenAI")  # a BOM, a capital letter
    assert (export.shape, export.has_cost, export.has_tokens, export.lines) == (
        "openai-costs",
        True,
        False,
        5,
    )
    assert export.days == (date(2026, 3, 10), date(2026, 3, 11))


def test_exported_members() -> None:
    import outlay.finance

    for name in outlay.finance.__all__:
        assert hasattr(outlay.finance, name), name
    assert {"reconcile", "parse_provider_csv", "model_key", "Reconciliation", "Reconciled"} <= set(
        outlay.finance.__all__
    )


def test_a_drift_too_small_for_two_places_is_zero_percent_not_minus_zero(ledger: InMemoryLedger) -> None:
    # ours 0.000000000000000001 on gpt-4.1; theirs a hair more: the drift is negative and tiny
    export = "date,model,cost\n2026-03-11,gpt-4.1,0.000000000000000001000001\n"
    result = reconcile(ledger, "openai", export, start="2026-03-11", end="2026-03-12")
    row = rows_by(result)[("2026-03-11", "gpt-4.1")]
    assert (row["drift"], row["drift_pct"]) == ("-0.000000000000000000000001", "0.00")


def test_totals_of_a_side_none_of_whose_events_is_priced_are_unknown_not_zero() -> None:
    ledger = InMemoryLedger()
    ledger.write([event(time=MARCH + 2 * DAY, model="o3", priced=False) for _ in range(2)])
    result = reconcile(ledger, "openai", "date,model,cost\n2026-03-12,o3,0.25\n").to_json()
    # Before: ours "0", drift "-0.25", drift_pct "-100.00": the provider billed 100 % more than metered.
    assert (result["ours_cost"], result["drift"], result["drift_pct"], result["unpriced_events"]) == (
        None, None, None, 2)  # fmt: skip
    # Nothing of ours in the window is a known zero.
    empty = reconcile(InMemoryLedger(), "openai", "date,model,cost\n2026-03-12,o3,0.25\n").to_json()
    assert (empty["ours_cost"], empty["drift"]) == ("0", "-0.25")
