"""CostEvent <-> CloudEvents JSON: exact round trip, and every malformed input named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay._errors import InvalidEvent
from outlay._usage import Usage
from outlay.events import CLOUDEVENT_TYPE, CostEvent, decode_event, encode_event, to_cloudevent

# Printable text (ids refuse control, format and separator characters other than the space).
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
ids = st.text(st.characters(codec="utf-8", exclude_categories=_UNPRINTABLE), min_size=1, max_size=40)
counts = st.integers(min_value=0, max_value=10**12 // 3)  # input sums three of them: at most 10^12
money = st.decimals(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False, places=18)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cache_read, cache_write, reasoning, output_extra, input_extra = (draw(counts) for _ in range(5))
    return Usage(
        input_tokens=cache_read + cache_write + input_extra,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=draw(st.integers(0, cache_write)),
        output_tokens=reasoning + output_extra,
        reasoning_tokens=reasoning,
        web_searches=draw(st.integers(0, 50)),
        units=draw(st.dictionaries(st.sampled_from(["gpu_seconds", "calls", "vector_queries"]), money)),
        complete=draw(st.booleans()),
        service_tier=draw(st.sampled_from([None, "priority", "flex", "batch"])),
    )


@st.composite
def run_links(draw: st.DrawFn) -> dict[str, Any]:
    """No run, or a run with its ancestors (root first) in run_path."""
    chain = draw(st.none() | st.lists(ids, min_size=1, max_size=5, unique=True))
    if chain is None:
        return {}
    *path, run = chain
    return {"run_id": run, "parent_run_id": path[-1] if path else None, "root_run_id": chain[0],
            "run_path": tuple(path)}  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> CostEvent:
    tenant = draw(st.none() | ids)
    priced = draw(st.booleans())
    return CostEvent(
        time=draw(
            st.datetimes(
                timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2199, 12, 31)
            )
        ),
        tenant_id=tenant,
        attribution="attributed" if tenant is not None else "unattributed",
        origin=None if tenant is not None else draw(ids),
        feature=draw(st.none() | ids),
        environment=draw(st.sampled_from(["production", "staging", "development", "test"])),
        labels=draw(st.dictionaries(ids, ids, max_size=3)),
        **draw(run_links()),
        operation=draw(st.sampled_from(["chat", "embedding", "tool", "retrieval", "compute"])),
        provider=draw(st.none() | ids),
        model=draw(st.none() | ids),
        usage=draw(usages()),
        latency_ms=draw(st.none() | st.floats(0, 1e6, allow_nan=False)),
        priced=priced,
        cost=draw(money) if priced else None,
        unpriced_reason=None if priced else "no price for x/y",
        price_version=draw(st.none() | ids),
        unit_prices=draw(st.dictionaries(st.sampled_from(["input", "output"]), money, max_size=2)),
    )


@given(events())
def test_round_trip_is_exact(event: CostEvent) -> None:
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.cost == event.cost
    if event.cost is not None:
        assert isinstance(decoded.cost, Decimal)
        assert str(decoded.cost.normalize()) == str(event.cost.normalize())


def _wire(**data_changes: Any) -> dict[str, Any]:
    event = CostEvent(tenant_id="acme", priced=True, cost=Decimal("0.25"), price_version="v")
    envelope = to_cloudevent(event)
    envelope["data"].update(data_changes)
    return envelope


def test_envelope_is_cloudevents_structured_mode() -> None:
    envelope = json.loads(encode_event(CostEvent(tenant_id="acme", priced=True, cost=Decimal(1))))
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == CLOUDEVENT_TYPE
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["subject"] == "acme"
    assert envelope["time"].endswith("Z")
    assert envelope["data"]["cost"] == "1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cost": 0.25}, "data.cost"),
        ({"cost": "NaN"}, "data.cost"),
        ({"cost": "Infinity"}, "data.cost"),
        ({"cost": "-1"}, "data.cost"),
        ({"cost": "abc"}, "data.cost"),
        # amounts no ledger could total exactly: a float's 55 digits, 1E-1000, 10^15 dollars
        ({"cost": "0.1000000000000000055511151231257827021181583404541015625"}, "decimal places"),
        ({"cost": "1E-1000"}, "decimal places"),
        ({"cost": "1000000000000000"}, "below 10^15"),
        ({"usage": {"input_tokens": 2**62}}, "input_tokens"),
        ({"usage": {"input_tokens": 10**60}}, "input_tokens"),
        ({"schema_version": 2}, "data.schema_version"),
        ({"usage": {"input_tokens": -5}}, "input_tokens"),
        ({"usage": {"input_tokens": 1.5}}, "input_tokens"),
        ({"usage": {"input_tokenz": 1}}, "usage"),
        ({"usage": {"input_tokens": True}}, "input_tokens"),
        ({"usage": {"input_tokens": 10, "output_tokens": "5"}}, "output_tokens"),
        ({"usage": {"input_tokens": None}}, "input_tokens"),
        ({"usage": {"input_tokens": 5, "cache_read_tokens": 6}}, "cache_read_tokens"),
        ({"usage": []}, "usage"),
        ({"run_id": 7}, "data.run_id"),
        ({"run_path": "a"}, "run_path: must be a sequence"),
        ({"run_path": ["a"]}, "run_path: must end with the parent_run_id"),
        ({"run_id": "c", "parent_run_id": "b", "run_path": ["a", 7]}, "run_path: must be a non-empty"),
        ({"run_id": "c", "parent_run_id": "b", "run_path": ["a", "b\n"]}, "run_path: must be a non-empty"),
        ({"run_id": "c", "parent_run_id": "b", "run_path": ["b", "b"]}, "run_path: must not repeat"),
        (
            {"run_id": "c", "parent_run_id": "b", "run_path": [*"abcdefghijklmnopqrstuvwxyzABCDEFG", "b"]},
            "run_path: holds at most 32",
        ),
        ({"model": ""}, "model"),
        ({"model": "m" * 201}, "model"),
        ({"tenant_id": "new\nline"}, "tenant_id"),
        ({"feature": "a\x00b"}, "feature"),
        ({"tenantid": "acme"}, "data"),
        ({"environment": "prod"}, "environment"),
        ({"priced": "yes"}, "data.priced"),
        ({"unit_prices": {"input": 1e-6}}, "data.unit_prices.input"),
    ],
)
def test_bad_data_is_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(_wire(**change))
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("id", None, "id"),
        ("id", "", "id"),
        ("id", "not-a-uuid", "event_id"),
        ("id", "0123456789abcdef0123456789abcdef----", "event_id"),  # 36 characters, hyphens misplaced
        ("id", "0123456z-89ab-cdef-0123-456789abcdef", "event_id"),
        ("id", 12345, "event_id"),
        ("specversion", "0.3", "specversion"),
        ("type", "dev.outlay.cost.v9", "type"),
        ("type", "com.example.other", "type"),
        ("time", "yesterday", "time"),
        ("time", "2026-11-22T10:00:00", "time"),
        ("time", "9999-12-31T23:00:00-05:00", "time"),  # past datetime's range once in UTC
        ("time", "0001-01-01T00:00:00+05:00", "time"),
        ("time", "1969-12-31T23:59:59Z", "time"),
        # accepted once, but no API window, dashboard or billing period could show it
        ("time", "1999-12-31T23:59:59Z", "time"),
        ("time", "2200-01-01T00:00:00Z", "time"),
        ("data", "x", "data"),
    ],
)
def test_bad_envelope_is_rejected_naming_the_field(key: str, value: Any, field: str) -> None:
    envelope = _wire()
    envelope[key] = value
    with pytest.raises(InvalidEvent) as info:
        decode_event(envelope)
    assert field in str(info.value)


def test_amounts_at_the_limits_a_ledger_can_total_are_kept_exactly() -> None:
    for text in ("999999999999999." + "9" * 36, "0." + "0" * 35 + "1", "0.5" + "0" * 60):
        event = decode_event(_wire(cost=text))
        assert event.cost == Decimal(text)
    assert decode_event(_wire(usage={"input_tokens": 10**12})).usage.input_tokens == 10**12


def test_missing_id_is_rejected() -> None:
    envelope = _wire()
    del envelope["id"]
    with pytest.raises(InvalidEvent, match="id"):
        decode_event(envelope)


def test_invalid_json_is_a_clear_error_and_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid JSON"):
        decode_event(b"{not json")


def test_priced_without_cost_and_unpriced_with_cost_are_rejected() -> None:
    with pytest.raises(InvalidEvent, match="cost"):
        decode_event(_wire(priced=True, cost=None))
    with pytest.raises(InvalidEvent, match="unknown is not zero"):
        decode_event(_wire(priced=False, unpriced_reason="x"))


def test_unattributed_events_keep_their_origin_and_have_no_tenant() -> None:
    event = CostEvent(attribution="unattributed", origin="nightly-reindex", priced=False, unpriced_reason="r")
    decoded = decode_event(encode_event(event))
    assert decoded.tenant_id is None and decoded.origin == "nightly-reindex"
    with pytest.raises(InvalidEvent, match="attribut"):
        CostEvent(tenant_id=None, priced=False, unpriced_reason="r")


def test_times_with_offsets_are_kept_as_instants() -> None:
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=13)))
    event = CostEvent(tenant_id="t", time=moment, priced=True, cost=Decimal(0))
    assert decode_event(encode_event(event)).time == moment


def _with(**data: Any) -> bytes:
    envelope = to_cloudevent(CostEvent(tenant_id="t", priced=True, cost=Decimal("0.5")))
    for name, value in data.items():
        if name == "time":
            envelope["time"] = value
        else:
            envelope["data"][name] = value
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-03-02t10:00:00z", datetime(2026, 3, 2, 10, tzinfo=UTC)),  # RFC 3339 5.6: either case
        ("2026-03-02 10:00:00.25+01:00", datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-03-02T10:00:00.123456789Z", datetime(2026, 3, 2, 10, 0, 0, 123_456, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_in_any_of_its_spellings_are_read(text: str, instant: datetime) -> None:
    assert decode_event(_with(time=text)).time == instant


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20260302T100000Z", "RFC 3339"),  # ISO 8601 basic format: not RFC 3339
        ("2026-W10-1T10:00:00Z", "RFC 3339"),  # a week date
        ("2026-03-02T10:00Z", "RFC 3339"),  # no seconds
        ("2026-03-02T10:00:00,5Z", "RFC 3339"),  # a decimal comma
        ("2026-02-30T10:00:00Z", "RFC 3339"),  # no such day
        ("2026-03-02T10:00:00", "UTC offset"),
    ],
)
def test_times_that_are_not_rfc3339_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message) as caught:
        decode_event(_with(time=text))
    assert caught.value.field == "time"


@pytest.mark.parametrize("text", ["1_000", "\u0661", " 1", "1 ", "\uff11"])
def test_money_is_a_plain_ascii_decimal_string(text: str) -> None:
    """Decimal() reads "1_000" as 1000 and Arabic-Indic or full-width digits as digits: an amount
    sent that way is refused, not read as something the sender may not have meant."""
    with pytest.raises(InvalidEvent, match="plain decimal") as caught:
        decode_event(_with(cost=text))
    assert caught.value.field == "data.cost"


def test_the_service_tier_travels_in_the_usage_and_old_payloads_read_as_standard() -> None:
    usage = Usage(input_tokens=10, output_tokens=2, service_tier="priority")
    event = CostEvent(tenant_id="acme", priced=True, cost=Decimal("0.25"), price_version="v", usage=usage)
    envelope = to_cloudevent(event)
    assert envelope["data"]["usage"] == {"input_tokens": 10, "output_tokens": 2, "service_tier": "priority"}
    assert decode_event(encode_event(event)).usage.service_tier == "priority"
    # A payload written before tiers were recorded: no key, standard, and the same usage as ever.
    old = _wire(usage={"input_tokens": 10, "output_tokens": 2})
    assert decode_event(old).usage == Usage(input_tokens=10, output_tokens=2)
    assert decode_event(old).usage.service_tier is None
    assert "service_tier" not in to_cloudevent(decode_event(old))["data"]["usage"]


@pytest.mark.parametrize("bad", [7, ["priority"], "x" * 5_000, "prio rity"])
def test_a_bad_tier_in_an_ingested_event_is_rejected_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^data\.service_tier: must be") as caught:
        decode_event(_wire(usage={"input_tokens": 10, "service_tier": bad}))
    assert len(str(caught.value)) < 200
