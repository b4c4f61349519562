"""inject/extract over the W3C baggage header: HTTP headers and message headers."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidBaggage, InvalidInput
from outlay.context import CostContext, attribute, current, extract, inject, run
from outlay.context._context import LABEL_KEY, derive


def _ctx_fields(ctx: CostContext | None) -> CostContext:
    assert ctx is not None
    return dataclasses.replace(ctx, run=None)


def test_round_trip_carries_every_field_and_nests_runs_under_the_sender() -> None:
    headers: dict[str, str] = {}
    with (
        attribute(
            tenant="acme",
            workspace="ws",
            user="u1",
            feature="search",
            billing_unit="campaign",
            environment="staging",
            request_id="req-1",
            workflow_id="wf-1",
            team="growth",
        ),
        run("orchestrator") as root,
        run("planner") as sender,
    ):
        sent = current()
        inject(headers)
    assert current() is None
    with extract(headers) as received:
        assert received == _ctx_fields(sent)
        assert received is current()
        assert received.run is None  # the run lives in the sender's process
        assert (received.run_id, received.parent_run_id, received.root_run_id) == (
            sender.id,
            root.id,
            root.id,
        )
        with run("worker", kind="job") as worker:
            assert worker.parent_id == sender.id
            assert worker.root_id == root.id
            ctx = current()
            assert ctx is not None
            assert ctx.tenant == "acme"
            assert ctx.parent_run_id == sender.id
    assert current() is None


def test_the_run_path_crosses_a_hop_so_runs_that_record_nothing_stay_linked() -> None:
    headers: dict[str, str] = {}
    with attribute(tenant="acme"), run("job") as job, run("queue/producer") as producer:
        inject(headers)
    assert "outlay.run_path=" in headers["baggage"]
    with extract(headers) as received:
        assert received.run_path == (job.id,)
        with run("worker") as worker, run("llm") as llm:
            ctx = current()
            assert ctx is not None and ctx.run_path == (job.id, producer.id, worker.id)
            assert (ctx.run_id, ctx.parent_run_id, ctx.root_run_id) == (llm.id, worker.id, job.id)
    # ids holding the separator or any text survive exactly
    odd = CostContext(tenant="t", run_id="c", parent_run_id="b/β %2F", run_path=("a,;=", "b/β %2F"))
    inject(headers, context=odd)
    with extract(headers) as back:
        assert back.run_path == ("a,;=", "b/β %2F")


def test_inject_outside_any_context_writes_nothing() -> None:
    headers: dict[str, str] = {}
    inject(headers)
    assert headers == {}


def test_carrier_without_outlay_baggage_is_a_no_op() -> None:
    with attribute(tenant="local") as local:
        with extract({"baggage": "userId=alice,tracestate=x"}) as ctx:
            assert ctx is local
            assert current() is local
        with extract({"content-type": "application/json"}) as ctx:
            assert ctx is local
    with extract({}) as ctx:
        assert ctx is None
        assert current() is None


def test_header_lookup_is_case_insensitive() -> None:
    headers: dict[str, str] = {}
    with attribute(tenant="acme"):
        inject(headers)
    with extract({"Baggage": headers["baggage"]}) as ctx:
        assert ctx is not None
        assert ctx.tenant == "acme"


def test_inject_keeps_foreign_members_and_replaces_stale_outlay_ones() -> None:
    headers = {"Baggage": "userId=alice;prop=1, outlay.tenant=stale, outlay.l.old=x,other=%E2%82%AC"}
    with attribute(tenant="acme"):
        inject(headers)
    assert list(headers) == ["baggage"]
    members = headers["baggage"].split(",")
    assert members[:2] == ["userId=alice;prop=1", "other=%E2%82%AC"]
    assert "outlay.tenant=acme" in members
    assert "outlay.tenant=stale" not in members
    assert not any(m.startswith("outlay.l.old") for m in members)
    with extract(headers) as ctx:
        assert ctx is not None
        assert dict(ctx.labels) == {}


def test_message_headers_as_a_list_of_pairs() -> None:
    message: list[tuple[str, str | bytes]] = [("content-type", "json"), ("BAGGAGE", "k=v")]
    with attribute(tenant="acme"), run("producer", kind="job") as producer:
        inject(message)
    assert message[0] == ("content-type", "json")
    assert [name for name, _ in message] == ["content-type", "baggage"]
    # Queues often deliver header values as bytes.
    delivered = [(name, value.encode() if isinstance(value, str) else value) for name, value in message]
    with extract(delivered) as ctx:
        assert ctx is not None
        assert ctx.run_id == producer.id
        assert ctx.tenant == "acme"


def test_custom_getter_and_setter() -> None:
    class Message:
        def __init__(self) -> None:
            self.meta: dict[str, list[str]] = {}

    def setter(carrier: Message, name: str, value: str) -> None:
        carrier.meta[name] = [value]

    def getter(carrier: Message, name: str) -> Sequence[str] | None:
        return carrier.meta.get(name)

    msg = Message()
    with attribute(tenant="acme", user="u"):
        inject(msg, setter, getter=getter)
    with extract(msg, getter) as ctx:
        assert ctx is not None
        assert (ctx.tenant, ctx.user) == ("acme", "u")


def test_several_baggage_headers_are_one_list() -> None:
    with attribute(tenant="acme"):
        headers: dict[str, str] = {}
        inject(headers)
    split = [("baggage", "a=1"), ("baggage", headers["baggage"])]
    with extract(split) as ctx:
        assert ctx is not None
        assert ctx.tenant == "acme"


def test_kafka_style_headers_with_null_values_are_read_or_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with attribute(tenant="acme"):
        headers: dict[str, str] = {}
        inject(headers)
    kafka = [("trace", None), ("baggage", None), ("baggage", headers["baggage"].encode())]
    with extract(kafka) as ctx:
        assert ctx is not None and ctx.tenant == "acme"
    with caplog.at_level("WARNING"), extract([("baggage", 42)], on_error="ignore") as ignored:
        assert ignored is None  # a malformed carrier is invalid baggage: ignored as asked
    with pytest.raises(InvalidBaggage, match="not text"):
        extract([("baggage", 42)])


def test_a_message_without_headers_carries_no_context() -> None:
    # nats-py, confluent-kafka and pika give None for the headers of a message sent without any:
    # a worker must go on with its own context, not crash on every such message.
    with attribute(tenant="worker-default") as outer, extract(None) as ctx:
        assert ctx is outer and current() is outer
    with extract(None, on_error="ignore") as ctx:
        assert ctx is None
    with attribute(tenant="a"), pytest.raises(InvalidInput, match="NoneType"):
        inject(None)  # nowhere to write: still a clear error


def test_unsupported_carrier_is_a_clear_error() -> None:
    with attribute(tenant="a"), pytest.raises(InvalidInput, match="carrier"):
        inject(object())
    with pytest.raises(InvalidInput, match="getter"):
        extract(object())


def test_extract_returns_the_context_and_exposes_it() -> None:
    with attribute(tenant="acme"):
        headers: dict[str, str] = {}
        inject(headers)
    scope = extract(headers)
    assert scope.context is not None
    assert current() is None  # nothing applied until entered
    with scope as ctx:
        assert ctx is scope.context


def test_exception_inside_extract_restores_the_previous_context() -> None:
    with attribute(tenant="acme"):
        headers: dict[str, str] = {}
        inject(headers)
    with attribute(tenant="local") as local:
        with pytest.raises(RuntimeError), extract(headers):
            raise RuntimeError("x")
        assert current() is local


def test_inject_an_explicit_context() -> None:
    headers: dict[str, str] = {}
    inject(headers, context=CostContext(tenant="queued"))
    with extract(headers) as ctx:
        assert ctx is not None
        assert ctx.tenant == "queued"


BAD_HEADERS = [
    ("outlay.tenant", "not key=value"),
    ("outlay.tenant=a b", "space in a value"),
    ('outlay.tenant="a"', "quote in a value"),
    ("outlay.tenant=a\\b", "backslash in a value"),
    ("outlay.tenant=%zz", "bad percent escape"),
    ("outlay.tenant=%ff", "escape that is not UTF-8"),
    ("outlay.tenant=a;=1", "property without a key"),
    ("bad key=1,outlay.tenant=a", "foreign member with a space in its key"),
    ("outlay.tenant=a,outlay.tenant=b", "duplicate outlay key"),
    ("outlay.environment=prod", "unknown environment"),
    ("outlay.billing_unit=team", "unknown billing unit"),
    ("outlay.run_kind=robot", "unknown run kind"),
    ("outlay.tenant=", "empty tenant"),
    ("outlay.tenant=acme%0Aevil", "a newline no cost event can hold"),
    ("outlay.run_name=a%00b", "a NUL no cost event can hold"),
    ("outlay.l.=v", "empty label key"),
    ("outlay.tenant=" + "x" * 8200, "over 8192 bytes"),
    ("outlay.run_id=c,outlay.parent_run_id=b,outlay.run_path=a", "run_path not ending with the parent"),
    ("outlay.run_id=c,outlay.parent_run_id=b,outlay.run_path=a//b", "empty id in run_path"),
    ("outlay.run_path=a", "run_path without a run"),
    ("outlay.run_id=c,outlay.parent_run_id=b,outlay.run_path=b,outlay.run_path=b", "duplicate run_path"),
    ("outlay.run_id=c,outlay.parent_run_id=c,outlay.run_path=c", "a run its own ancestor"),
    (",".join(f"k{i}=v" for i in range(181)) + ",outlay.tenant=a", "over 180 list-members"),
]


@pytest.mark.parametrize(("header", "why"), BAD_HEADERS, ids=[why for _, why in BAD_HEADERS])
def test_malformed_baggage_raises_by_default(header: str, why: str) -> None:
    with pytest.raises(InvalidBaggage) as info:
        extract({"baggage": header})
    assert info.value.field == "baggage"
    assert str(info.value).startswith("baggage: ")
    assert current() is None


def test_malformed_header_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidBaggage, match="8192"):
        extract({"baggage": "k=" + "v" * 9000})
    with pytest.raises(InvalidBaggage, match="180"):
        extract({"baggage": ",".join(f"k{i}=v" for i in range(181))})
    with pytest.raises(InvalidBaggage, match=r"outlay\.environment.*production"):
        extract({"baggage": "outlay.environment=prod"})
    with pytest.raises(InvalidBaggage, match="more than once"):
        extract({"baggage": "outlay.user=a,outlay.user=a"})


@pytest.mark.parametrize(("header", "why"), BAD_HEADERS, ids=[why for _, why in BAD_HEADERS])
def test_on_error_ignore_applies_nothing_and_warns(
    header: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with attribute(tenant="local") as local:
        with caplog.at_level(logging.WARNING, logger="outlay.context"):
            scope = extract({"baggage": "outlay.user=someone," + header}, on_error="ignore")
        with scope as ctx:
            assert ctx is local  # never half-applied: not even the valid outlay.user member
            assert current() is local
    assert any("ignoring the baggage header" in r.getMessage() for r in caplog.records)


def test_on_error_must_be_known() -> None:
    with pytest.raises(InvalidInput, match="on_error"):
        extract({}, on_error="skip")  # type: ignore[arg-type]


def test_tolerated_syntax_ows_empty_members_properties_unknown_keys() -> None:
    header = " k = v ; p ; q=1 ,, outlay.tenant = acme;meta=x , outlay.future_field=1 ,\toutlay.l.a=b"
    with extract({"baggage": header}) as ctx:
        assert ctx is not None
        assert ctx.tenant == "acme"
        assert dict(ctx.labels) == {"a": "b"}
        assert ctx.environment == "production"


def test_inject_refuses_a_context_over_the_limits() -> None:
    headers = {"baggage": "foreign=" + "x" * 4000}
    big = {f"label{i}": "v" * 100 for i in range(40)}
    with attribute(tenant="acme", labels=big), pytest.raises(InvalidBaggage, match="does not fit"):
        inject(headers)
    assert headers == {"baggage": "foreign=" + "x" * 4000}  # carrier untouched


def test_inject_refuses_text_with_no_utf8_form() -> None:
    # attribute() refuses such a label first; a context assembled around validation still cannot leave.
    with attribute(tenant="a"), pytest.raises(InvalidBaggage, match="UTF-8"):
        inject({}, context=derive(CostContext(tenant="a"), {"labels": {"k": "a\ud800"}}))


def test_special_characters_are_percent_encoded_on_the_wire() -> None:
    headers: dict[str, str] = {}
    with attribute(tenant="a,b;c=d%e f", labels={"example.com/cost:center-1": 'ключ,;= % € "\\'}):
        inject(headers)
    for ch in ' ;"\\':
        assert ch not in headers["baggage"]
    assert headers["baggage"].isascii()
    with extract(headers) as ctx:
        assert ctx is not None
        assert ctx.tenant == "a,b;c=d%e f"
        assert dict(ctx.labels) == {"example.com/cost:center-1": 'ключ,;= % € "\\'}


# Field values are printable (what a cost event holds); label values may be any text.
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
_value = st.text(st.characters(exclude_categories=_UNPRINTABLE), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    tenant=_value,
    workspace=st.none() | _value,
    user=st.none() | _value,
    feature=st.none() | _value,
    request_id=st.none() | _value,
    labels=st.dictionaries(st.from_regex(LABEL_KEY, fullmatch=True), st.text(max_size=30), max_size=4),
    run_name=st.none() | _value,
    billing_unit=st.none() | st.sampled_from(["user", "workspace", "feature", "campaign"]),
    environment=st.sampled_from(["production", "staging", "development", "test"]),
)
def test_round_trip_is_exact_for_any_unicode(
    tenant: str,
    workspace: str | None,
    user: str | None,
    feature: str | None,
    request_id: str | None,
    labels: dict[str, str],
    run_name: str | None,
    billing_unit: str | None,
    environment: str,
) -> None:
    headers: dict[str, str] = {"baggage": "foreign=1"}
    with attribute(
        tenant=tenant,
        workspace=workspace,
        user=user,
        feature=feature,
        request_id=request_id,
        billing_unit=billing_unit,
        environment=environment,
        labels=labels,
    ):
        if run_name is None:
            sent = current()
            inject(headers)
        else:
            with run(run_name):
                sent = current()
                inject(headers)
    assert headers["baggage"].startswith("foreign=1,")
    with extract(headers) as received:
        assert received == _ctx_fields(sent)


def test_round_trip_across_a_real_process_boundary() -> None:
    with attribute(tenant="acme ☃", team="x,y"), run("sender") as sender:
        headers: dict[str, str] = {}
        inject(headers)
    code = (
        "import sys, outlay.context as c\n"
        "with c.extract({'baggage': sys.argv[1]}), c.run('receiver', kind='job') as r:\n"
        "    ctx = c.current()\n"
        "    print(ctx.tenant, ctx.labels['team'], r.parent_id, r.root_id, sep='|')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, headers["baggage"]],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"acme ☃|x,y|{sender.id}|{sender.id}"


@settings(max_examples=300, deadline=None)
@given(
    header=st.text(max_size=300)
    | st.lists(
        st.sampled_from(
            ["outlay.tenant=a", "outlay.l.", "%", "=", ",", ";", " ", "x", "outlay.environment="]
        ),
        max_size=30,
    ).map("".join)
)
def test_any_header_is_either_read_or_refused_with_invalid_baggage(header: str) -> None:
    try:
        scope = extract({"baggage": header})
    except InvalidBaggage:
        pass
    else:
        with scope as ctx:
            assert ctx is scope.context
    with extract({"baggage": header}, on_error="ignore"):
        pass
    assert current() is None


def test_exported_members() -> None:
    import outlay.context

    for name in outlay.context.__all__:
        assert hasattr(outlay.context, name), name
    for name in ["attribute", "run", "current", "wrap", "inject", "extract", "CostContext", "Run"]:
        assert name in outlay.context.__all__
    assert "set_default_environment" in outlay.context.__all__


def test_framework_header_classes_work_as_carriers() -> None:
    httpx = pytest.importorskip("httpx")
    datastructures = pytest.importorskip("starlette.datastructures")
    outgoing = httpx.Headers({"Baggage": "vendor=1"})
    asgi = datastructures.MutableHeaders(raw=[(b"baggage", b"vendor=2")])
    with attribute(tenant="acme"), run("client") as sender:
        inject(outgoing)
        inject(asgi)
    assert outgoing["baggage"].startswith("vendor=1,outlay.")
    assert asgi.getlist("baggage")[0].startswith("vendor=2,outlay.")
    for carrier in (outgoing, datastructures.Headers(raw=asgi.raw)):
        with extract(carrier) as ctx:
            assert ctx is not None
            assert (ctx.tenant, ctx.run_id) == ("acme", sender.id)


class _WerkzeugLikeHeaders:
    """Like werkzeug's Headers (Flask's request.headers): dict-like but not a Mapping; iterating
    yields (name, value) pairs and items() too, a repeated name once per value."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self._pairs if k.lower() == name.lower()), default)


def test_dict_like_header_classes_that_are_not_mappings_are_read() -> None:
    with attribute(tenant="acme"), run("client") as sender:
        headers: dict[str, str] = {}
        inject(headers)
    flask_headers = _WerkzeugLikeHeaders(
        [("Host", "x"), ("Baggage", "vendor=1"), ("Baggage", headers["baggage"])]
    )
    with extract(flask_headers) as ctx:
        assert ctx is not None and (ctx.tenant, ctx.run_id) == ("acme", sender.id)
