"""The compiled row building of the SQLite ledger (``outlay.ledger._speedups``) against its
Python reference (``event_rows_py``): the same rows, the same rollup and run deltas, the same
errors, and no leaked references. CI requires the compiled module (``.ci/run``); elsewhere these
tests skip where the install found no C compiler."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay._errors import InvalidInput
from outlay._usage import Usage
from outlay.events import CostEvent, encode_event
from outlay.ledger import GROUP_KEYS, SQLiteLedger, speedups
from outlay.ledger._rows import RollupDeltas
from outlay.ledger._sqlite import event_rows, event_rows_py

from .conftest import AWKWARD_PRICES, T0, awkward_events, event

if not speedups():
    if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
        pytest.fail(
            "outlay.ledger._speedups was not built (OUTLAY_REQUIRE_SERVICES=1: CI builds it)",
            pytrace=False,
        )
    pytest.skip("outlay.ledger._speedups was not built (no C compiler at install)", allow_module_level=True)

_PLUS_5 = timezone(timedelta(hours=5, minutes=30))


class _Moment(datetime):
    """A datetime subclass (as pandas' Timestamp is): the compiled code must not assume the type."""


def _first(events: list[CostEvent]) -> dict[str, int]:
    first: dict[str, int] = {}
    for index, item in enumerate(events):
        first.setdefault(item.event_id, index)
    return first


def _both(events: list[CostEvent], payloads: Any) -> None:
    """Assert the compiled and the Python row building agree on ``events``."""
    first = _first(events)
    expected_rows, expected = event_rows_py(events, payloads, first)
    rows, deltas = event_rows(events, payloads, first)
    assert rows == expected_rows
    assert [type(v) for row in rows for v in row] == [type(v) for row in expected_rows for v in row]
    assert deltas.groups == expected.groups
    assert list(deltas.groups) == list(expected.groups)  # same order: the upserts run in it
    assert deltas.runs == expected.runs
    assert list(deltas.runs) == list(expected.runs)


@st.composite
def _events(draw: st.DrawFn) -> CostEvent:
    tenant = draw(st.sampled_from(["acme", "globex", "ünïcode-tenant", None]))
    priced = draw(st.booleans())
    price = draw(st.sampled_from(AWKWARD_PRICES))
    zone = draw(st.sampled_from([UTC, _PLUS_5, timezone(timedelta(0))]))  # the last: UTC, not the singleton
    moment = T0 + timedelta(
        minutes=draw(st.integers(-3 * 24 * 60, 3 * 24 * 60)), microseconds=draw(st.integers(0, 999_999))
    )
    moment = moment.astimezone(zone)
    if draw(st.booleans()) and zone is UTC:
        moment = _Moment.fromtimestamp(moment.timestamp(), UTC)
    run = draw(st.sampled_from([None, "run-a", "run-b", "run-c", "run-d"]))
    path: tuple[str, ...] = ()
    parent = None
    if run is not None and draw(st.booleans()):
        path = tuple(
            draw(st.lists(st.sampled_from(["root-1", "mid-2", "mid-3"]), min_size=1, max_size=3, unique=True))
        )
        parent = path[-1]
    fields: dict[str, Any] = {
        "time": moment,
        "tenant_id": tenant,
        "origin": draw(st.sampled_from(["nightly", None])),
        "feature": draw(st.sampled_from(["search", "chat", None])),
        "agent": draw(st.sampled_from(["planner", "writer", None])),
        "model": draw(st.sampled_from(["gpt-4o", "o3", None])),
        "provider": draw(st.sampled_from(["openai", "anthropic", None])),
        "operation": draw(st.sampled_from(["chat", "embedding", "tool"])),
        "environment": draw(st.sampled_from(["production", "staging"])),
        "run_id": run,
        "parent_run_id": parent,
        "root_run_id": (path[0] if path else run) if draw(st.booleans()) else None,
        "run_path": path,
        "priced": priced,
        "cost": price * draw(st.integers(0, 10**7)),
        "price_version": draw(st.sampled_from(["v1", None])),
        "usage": Usage(
            input_tokens=draw(st.integers(5, 10**9)),
            cache_read_tokens=draw(st.integers(0, 5)),
            output_tokens=draw(st.integers(3, 10**6)),
            reasoning_tokens=draw(st.integers(0, 3)),
        ),
    }
    return event(**fields)


class TestSameAsPython:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events=st.lists(_events(), max_size=30), repeats=st.lists(st.integers(0, 29), max_size=5))
    def test_generated_batches(self, events: list[CostEvent], repeats: list[int]) -> None:
        # Repeated ids (a redelivery inside one batch): only the first of each is a row.
        events = events + [events[i] for i in repeats if i < len(events)]
        _both(events, None)
        _both(events, [encode_event(e) for e in events])

    @settings(max_examples=300, deadline=None)
    @given(
        sign=st.integers(0, 1),
        digits=st.lists(st.integers(0, 9), min_size=1, max_size=40),
        exponent=st.integers(-45, 20),
    )
    def test_every_form_of_a_cost_is_written_out_as_format_f(
        self, sign: int, digits: list[int], exponent: int
    ) -> None:
        """The compiled rows write costs out from ``str`` (1.8750000E-8, 0E+3, -0E-7, 1.23E+5 ...)
        exactly as ``format(cost, "f")`` does."""
        cost = Decimal((sign, tuple(digits), exponent))
        try:
            item = event(cost=cost, priced=True)
        except InvalidInput:
            return  # an amount no event can hold (too big, too many places)
        _both([item], None)
        rows, _ = event_rows([item], None, _first([item]))
        assert rows[0][13] == format(cost, "f")

    def test_a_realistic_batch(self) -> None:
        events = awkward_events(3000)
        _both(events, [encode_event(e) for e in events])

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_payload_types(self, kind: type) -> None:
        events = awkward_events(5)
        payloads = [kind(encode_event(e)) for e in events]
        _both(events, payloads)
        rows, _ = event_rows(events, payloads, _first(events))
        assert all(type(row[-1]) is bytearray for row in rows)

    def test_a_run_known_first_as_a_link_takes_its_events_tenant(self) -> None:
        child = event(run_id="child", parent_run_id="parent", root_run_id="parent", run_path=("parent",))
        own = event(tenant_id="globex", run_id="parent", root_run_id="parent", time=T0 + timedelta(hours=1))
        earlier = event(run_id="parent", root_run_id="parent", time=T0 - timedelta(hours=1))
        _both([child, own, earlier], None)
        _, deltas = event_rows([child, own, earlier], None, _first([child, own, earlier]))
        parent = deltas.runs["parent"]
        assert parent.tenant_id == ""  # globex then acme: several tenants, no one's to see
        assert (parent.first_us, parent.last_us) == (
            int((T0 - timedelta(hours=1)).timestamp()) * 1_000_000,
            int((T0 + timedelta(hours=1)).timestamp()) * 1_000_000,
        )

    def test_adds_to_the_deltas_it_is_given(self) -> None:
        from outlay.ledger import _sqlite

        events = awkward_events(20)
        first = _first(events)
        deltas = RollupDeltas()
        expected = RollupDeltas()
        rows = _sqlite._SPEEDUPS.event_rows(events, None, first, deltas)
        _sqlite._SPEEDUPS.event_rows(events, None, first, deltas)  # twice: every total doubles
        for item in events:
            for _ in range(2):
                from outlay.ledger._rows import day_of, rollup_key, time_us, tokens_of

                us = time_us(item.time)
                expected.add_event(item, rollup_key(item, day_of(us)), us, tokens_of(item))
        assert len(rows) == 20
        assert deltas.groups == expected.groups and deltas.runs == expected.runs


class TestBadInput:
    def test_an_index_past_the_events_is_an_index_error(self) -> None:
        events = awkward_events(3)
        with pytest.raises(IndexError):
            event_rows(events, None, {"x": 5})

    def test_too_few_payloads_is_an_index_error(self) -> None:
        events = awkward_events(3)
        with pytest.raises(IndexError):
            event_rows(events, [b"{}"], _first(events))

    def test_not_an_event_is_an_attribute_error_not_a_crash(self) -> None:
        with pytest.raises(AttributeError, match="time"):
            event_rows([object()], None, {"x": 0})  # type: ignore[list-item]

    @pytest.mark.parametrize("name", ["environment", "usage"])
    def test_an_empty_slot_is_the_same_attribute_error(self, name: str) -> None:
        from dataclasses import replace

        item = replace(awkward_events(1)[0])
        object.__delattr__(item, name)
        messages = []
        for function in (event_rows_py, event_rows):
            with pytest.raises(AttributeError) as caught:
                function([item], None, {item.event_id: 0})
            messages.append(str(caught.value))
        assert messages[0] == messages[1] == f"'CostEvent' object has no attribute '{name}'"

    def test_a_payload_that_is_not_bytes_is_a_type_error(self) -> None:
        events = awkward_events(1)
        with pytest.raises(TypeError):
            event_rows(events, [1.5], _first(events))  # type: ignore[list-item]


class TestReferences:
    def test_no_reference_is_leaked_or_stolen(self) -> None:
        events = awkward_events(200)
        # Strings only this test holds: a tenant like "acme" is shared with the whole process, whose
        # other threads (a stream recorded at collection, say) move its count meanwhile.
        unique = uuid.uuid4().hex
        events[0] = event(
            tenant_id=f"tenant-{unique}",
            run_id=f"run-{unique}",
            time=events[0].time,
            usage=Usage(input_tokens=123_456_789, output_tokens=987_654),  # ints no one else holds
        )
        events[3] = event(tenant_id=f"other-{unique}", run_id=f"run3-{unique}", time=events[3].time)
        payloads = [encode_event(e) for e in events]
        first = _first(events)
        probes = [
            events[0],
            events[0].tenant_id,
            events[0].time,
            events[0].usage,
            payloads[0],
            events[0].cost,
        ]
        probes += [events[1].event_id, events[3].run_id, events[0].usage.input_tokens]
        event_rows(events, payloads, first)  # warm every cache (day texts, interned strings)
        gc.collect()
        before = [sys.getrefcount(p) for p in probes]
        for _ in range(5):
            rows, deltas = event_rows(events, payloads, first)
            del rows, deltas
        gc.collect()
        assert [sys.getrefcount(p) for p in probes] == before

    def test_an_error_midway_leaks_nothing(self) -> None:
        events: list[Any] = awkward_events(50)
        events[0] = event(tenant_id=f"tenant-{uuid.uuid4().hex}")  # a string only this test holds
        events[30] = object()
        first = {f"id-{i}": i for i in range(50)}
        probe = events[0].tenant_id
        gc.collect()
        before = sys.getrefcount(probe)
        for _ in range(5):
            with pytest.raises(AttributeError):
                event_rows(events, None, first)
        gc.collect()
        assert sys.getrefcount(probe) == before


def test_the_ledger_without_speedups_writes_the_same(tmp_path: Any) -> None:
    """``OUTLAY_NO_SPEEDUPS=1`` runs the Python rows, and the ledger then holds the same totals."""
    events = awkward_events(300)
    fast = SQLiteLedger(tmp_path / "fast.db")
    fast.write(events)
    script = (
        "import sys; from outlay.events import decode_event;"
        "from outlay.ledger import SQLiteLedger, speedups; assert not speedups();"
        "events = [decode_event(line) for line in sys.stdin.buffer.read().splitlines()];"
        f"SQLiteLedger({str(tmp_path / 'slow.db')!r}).write(events)"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        input=b"\n".join(encode_event(e) for e in events),
        check=True,
        env={**os.environ, "OUTLAY_NO_SPEEDUPS": "1"},
        timeout=60,
    )
    slow = SQLiteLedger(tmp_path / "slow.db")
    start, end = date(2000, 1, 1), date(2100, 1, 1)

    def state(ledger: SQLiteLedger) -> tuple[object, ...]:
        rollups = sorted(ledger.rollup_totals(GROUP_KEYS, start, end), key=repr)
        run_ids = sorted({e.run_id for e in events if e.run_id})
        return rollups, sorted(ledger.runs(run_ids=run_ids), key=repr), ledger.event_count()

    assert state(slow) == state(fast)
    total = sum(sum(t.cost or 0 for t in ledger.rollup_totals([], start, end)) for ledger in (fast,))
    assert total == sum((e.cost for e in events if e.cost is not None), Decimal(0))
    fast.close()
    slow.close()


def test_speedups_follow_the_environment_switch() -> None:
    code = "from outlay.ledger import speedups; print(speedups())"
    env = {**os.environ, "OUTLAY_NO_SPEEDUPS": "1"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    env["OUTLAY_NO_SPEEDUPS"] = "0"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True"


def test_a_time_before_the_epoch_day_boundary_is_exact() -> None:
    """Times just before and after midnight UTC land on their own day, in any time zone."""
    midnight = datetime(2026, 3, 17, tzinfo=UTC)
    events = [
        event(time=midnight - timedelta(microseconds=1)),
        event(time=midnight),
        event(time=(midnight - timedelta(microseconds=1)).astimezone(_PLUS_5)),
        event(time=datetime(2000, 1, 1, tzinfo=UTC)),
        event(time=datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        event(time=datetime(2024, 2, 29, 12, tzinfo=UTC)),
    ]
    _both(events, None)
    rows, _ = event_rows(events, None, _first(events))
    assert [row[2] for row in rows] == [
        "2026-03-16",
        "2026-03-17",
        "2026-03-16",
        "2000-01-01",
        "2199-12-31",
        "2024-02-29",
    ]


class TestPythonCodeMidway:
    """Python code the compiled loop calls (a sequence's ``__getitem__``, a property of a subclass,
    an int subclass's ``+``) may change what the loop holds: it must not crash, and must do what
    the Python reference does."""

    def test_first_changed_by_the_events_sequence(self) -> None:
        events = awkward_events(4)

        def run(function: Any) -> Any:
            # Keys made at run time (not interned): ``first`` holds their only reference.
            first = {"".join(["id-", str(i)]): i for i in range(4)}

            class Swapping(list[CostEvent]):
                def __getitem__(self, index: Any) -> Any:
                    key = "".join(["id-", str(index)])
                    if key in first:  # the id being read: dropped (freed), another put in its place
                        del first[key]
                        first["".join(["new-", str(index)])] = index
                    return list.__getitem__(self, index)

            rows, _ = function(Swapping(events), None, first)
            return [row[0] for row in rows]

        assert run(event_rows) == run(event_rows_py) == ["id-0", "id-1", "new-0", "new-1"]

    def test_first_growing_midway_is_the_dict_error(self) -> None:
        events = awkward_events(3)
        for function in (event_rows, event_rows_py):
            first = {"a": 0, "b": 1, "c": 2}

            class Growing(list[CostEvent]):
                def __getitem__(self, index: Any) -> Any:
                    first[f"more-{index}"] = index
                    return list.__getitem__(self, index)

            with pytest.raises(RuntimeError, match="changed size during iteration"):
                function(Growing(events), None, first)

    def test_a_failing_property_raises_its_own_error(self) -> None:
        failing = {"on": False}

        class Odd(CostEvent):
            __slots__ = ()

            @property
            def feature(self) -> str:
                if failing["on"]:
                    raise KeyError("no feature")
                return "search"

            @property
            def model(self) -> str:  # Python code, which must not run with an error pending
                return "gpt-" + "4o"

            @property
            def unpriced_reason(self) -> str:
                if failing["on"]:
                    raise KeyError("no reason")
                return ""

            @property
            def price_version(self) -> str:
                return "v" + "1"

        item = event()
        odd = Odd(**{name: getattr(item, name) for name in item.__dataclass_fields__})
        _both([odd], None)
        failing["on"] = True
        for function in (event_rows_py, event_rows):
            with pytest.raises(KeyError, match="no feature"):
                function([odd], None, {odd.event_id: 0})

    def test_a_token_whose_add_changes_the_totals(self) -> None:
        from outlay.ledger._rows import Acc

        class Meddling(int):
            """A token count (an int subclass passes Usage) whose ``+`` empties every Acc's tokens."""

            def __radd__(self, other: Any) -> Any:
                for item in gc.get_objects():
                    if type(item) is Acc:
                        item.tokens.clear()
                return int(self) + other

            __add__ = __radd__

        events = [event(usage=Usage(input_tokens=Meddling(7), output_tokens=3)) for _ in range(2)]
        for function in (event_rows_py, event_rows):
            with pytest.raises(IndexError):
                function(events, None, _first(events))


class TestConfigure:
    """``configure`` is private, but must not be a way to corrupt memory: the slots it reads and
    writes directly must be those of the classes given, and it allocates only plain classes."""

    def _configure(self, **classes: Any) -> None:
        from outlay._money import MONEY_CONTEXT
        from outlay.ledger import _speedups
        from outlay.ledger._rows import Acc, RunAcc, day_of, time_us

        given = {"event": CostEvent, "usage": Usage, "acc": Acc, "run": RunAcc, **classes}
        _speedups.configure(
            time_us,
            day_of,
            encode_event,
            given["event"],
            given["usage"],
            given["acc"],
            given["run"],
            RollupDeltas.link,
            MONEY_CONTEXT.add,
            "",
        )

    def test_refuses_slots_of_another_class(self) -> None:
        class Big:
            __slots__ = tuple(f"s{i}" for i in range(500))

        class Small:  # its "slots" are Big's: offsets far past the end of a Small
            __slots__ = ()

        for i, name in enumerate(("events", "unpriced", "cost", "tokens", "time")):
            setattr(Small, name, Big.__dict__[f"s{490 + i}"])
        from outlay.ledger import _sqlite

        try:
            with pytest.raises(TypeError, match=r"Small\.events is not an object slot"):
                self._configure(acc=Small)
            with pytest.raises(TypeError, match="is not an object slot"):
                self._configure(event=Small)
        finally:
            _sqlite._load_speedups()  # the real classes again, whatever happened
        _both(awkward_events(30), None)

    def test_refuses_a_class_with_another_c_base(self) -> None:
        class Mapping(dict[str, Any]):  # tp_alloc alone would leave its dict uninitialised
            __slots__ = ("cost", "events", "tokens", "unpriced")

        from outlay.ledger import _sqlite

        try:
            with pytest.raises(TypeError, match="deriving from object alone"):
                self._configure(acc=Mapping)
        finally:
            _sqlite._load_speedups()
        _both(awkward_events(30), None)


@pytest.mark.parametrize("problem", ["payload", "usage", "getitem", "inexact", "first"])
def test_no_reference_is_leaked_on_any_error_path(problem: str) -> None:
    from dataclasses import replace

    events: Any = awkward_events(40)
    # tenant_id is a probe: a string only this test holds ("acme" is the whole process's)
    events[24] = replace(events[24], tenant_id=f"tenant-{uuid.uuid4().hex}")
    payloads: Any = [encode_event(e) for e in events]
    first = _first(events)
    broken = replace(events[25])
    if problem == "payload":
        payloads[25] = 1.5
        expected: type[BaseException] = TypeError
    elif problem == "usage":
        usage = replace(broken.usage)
        object.__delattr__(usage, "output_tokens")
        object.__setattr__(broken, "usage", usage)
        events[25] = broken
        expected = AttributeError
    elif problem == "getitem":

        class Failing(list[CostEvent]):
            def __getitem__(self, index: Any) -> Any:
                if index == 25:
                    raise LookupError(index)
                return list.__getitem__(self, index)

        events = Failing(events)
        expected = LookupError
    elif problem == "inexact":  # past what a CostEvent accepts: the money context refuses to round
        from decimal import Inexact

        other = replace(broken, event_id="0190b1a2-0000-7000-8000-000000000001")
        object.__setattr__(broken, "cost", Decimal("1E+100"))
        object.__setattr__(other, "cost", Decimal("1E-100"))
        events[25] = broken
        events[26] = other
        first = _first(events)
        expected = Inexact
    else:
        first[next(iter(first))] = 10**30
        expected = IndexError
    probes = [events[0], events[24], events[24].usage, events[24].tenant_id, payloads[24], *list(first)[:3]]
    with pytest.raises(expected):
        event_rows(events, payloads, first)
    gc.collect()
    before = [sys.getrefcount(p) for p in probes]
    for _ in range(5):
        with pytest.raises(expected):
            event_rows(events, payloads, first)
    gc.collect()
    assert [sys.getrefcount(p) for p in probes] == before


def test_journal_lines_are_appended_holding_the_gil_and_errors_are_os_errors(tmp_path: Any) -> None:
    # The admission journals write each line with append_held: os.write's release and retake of
    # the GIL waited a switch interval beside a busy thread (+32 µs per metered call, not +3).
    # It must append exactly what os.write would, and fail as it would.
    import errno

    from outlay import _journal
    from outlay.ledger._speedups import append_held

    assert _journal._write is append_held
    path = tmp_path / "journal.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        assert append_held(fd, b"+first\n") == 7
        assert append_held(fd, memoryview(b"-first\n")) == 7  # any bytes-like, as os.write takes
        assert append_held(fd, b"") == 0
    finally:
        os.close(fd)
    assert path.read_bytes() == b"+first\n-first\n"
    with pytest.raises(OSError) as caught:
        append_held(fd, b"x")  # closed
    assert caught.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        append_held(fd, "text")  # type: ignore[arg-type]
