"""The SQLite ledger's compiled inserts (``outlay.ledger._speedups.insert_rows``): the same rows,
counts and errors as ``sqlite3.Cursor.executemany``, other threads running while it steps, and a
clean fallback to executemany where it cannot call this Python's SQLite. CI requires the compiled
module (``.ci/run``); elsewhere these tests skip where the install found no C compiler."""

from __future__ import annotations

import gc
import mmap
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlay._money import MONEY_CONTEXT
from outlay._rating import Rating
from outlay.events import CostEvent, encode_event
from outlay.ledger import GROUP_KEYS, SQLiteLedger, rerate
from outlay.ledger import _sqlite as ledger_sqlite
from outlay.ledger._sqlite import compiled_inserts, event_rows, event_rows_py
from outlay.ledger._sqlite_schema import DecimalSum, dadd, register_functions

from .conftest import awkward_events

if not compiled_inserts():
    if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
        pytest.fail(
            "outlay.ledger._speedups.insert_rows is not in use (OUTLAY_REQUIRE_SERVICES=1: CI builds it)",
            pytrace=False,
        )
    pytest.skip("the compiled inserts are not in use (no C compiler at install)", allow_module_level=True)

insert_rows = ledger_sqlite._INSERT_ROWS


@pytest.fixture
def pair() -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """Two databases of the same table: one written by insert_rows, one by executemany."""
    connections = []
    for _ in range(2):
        connection = sqlite3.connect(":memory:", isolation_level=None)
        connection.execute("CREATE TABLE t (k TEXT UNIQUE, v, w)")
        connection.create_function("boom", 1, lambda x: 1 // 0)
        connections.append(connection)
    yield connections[0], connections[1]
    for connection in connections:
        connection.close()


def _same(pair: tuple[sqlite3.Connection, sqlite3.Connection], sql: str, rows: list[Any]) -> Any:
    """Run ``rows`` through both; assert the same outcome (count or error) and table; return it."""
    fast, slow = pair
    outcome: list[Any] = []
    for connection, run in (
        (fast, lambda: insert_rows(fast, sql, rows)),
        (slow, lambda: slow.executemany(sql, rows).rowcount),
    ):
        try:
            outcome.append(("ok", run()))
        except Exception as exc:  # compared below
            outcome.append((type(exc), str(exc), getattr(exc, "sqlite_errorcode", None)))
    assert outcome[0] == outcome[1]
    query = "SELECT k, v, typeof(v), w, typeof(w) FROM t ORDER BY rowid"
    tables = [connection.execute(query).fetchall() for connection in pair]
    assert tables[0] == tables[1]
    return outcome[0]


class TestSameAsExecutemany:
    def test_every_value_type_is_stored_as_executemany_stores_it(self, pair: Any) -> None:
        class Text(str):
            pass

        rows = [
            ("a", None, 1),
            ("b", True, False),
            ("c", 2**63 - 1, -(2**63)),
            ("d", 1.5, float("nan")),
            ("ü€😀", Text("sub"), ""),
            ("e", b"", b"\x00\xff"),
            ("f", bytearray(b"xy"), memoryview(b"mv")),
        ]
        assert _same(pair, "INSERT INTO t VALUES (?, ?, ?)", rows) == ("ok", 7)

    def test_conflicts_skipped_are_not_counted(self, pair: Any) -> None:
        rows = [("a", 1, 1), ("a", 2, 2), ("b", 3, 3)]
        assert _same(pair, "INSERT INTO t VALUES (?, ?, ?) ON CONFLICT (k) DO NOTHING", rows) == ("ok", 2)
        upsert = "INSERT INTO t VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET v = v + excluded.v"
        assert _same(pair, upsert, [("a", 10, 0), ("c", 1, 1)]) == ("ok", 2)

    def test_an_empty_list_changes_nothing(self, pair: Any) -> None:
        assert _same(pair, "INSERT INTO t VALUES (?, ?, ?)", []) == ("ok", 0)

    def test_a_constraint_error_is_an_integrity_error_with_its_code(self, pair: Any) -> None:
        outcome = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", [("a", 1, 1), ("b", 2, 2), ("a", 3, 3)])
        # the rows before it stay, as with executemany (the caller's transaction rolls them back)
        assert outcome == (sqlite3.IntegrityError, "UNIQUE constraint failed: t.k", 2067)

    def test_a_failing_sql_function_is_an_operational_error(self, pair: Any) -> None:
        outcome = _same(pair, "INSERT INTO t VALUES (?, boom(?), ?)", [("a", 1, 1)])
        assert outcome[0] is sqlite3.OperationalError
        assert "user-defined function raised exception" in outcome[1]

    def test_bad_sql_and_bad_rows_are_refused_like_executemany(self, pair: Any) -> None:
        assert _same(pair, "INSERT INTO nowhere VALUES (?)", [(1,)])[0] is sqlite3.OperationalError
        wrong_count = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", [("a", 1)])
        assert wrong_count[0] is sqlite3.ProgrammingError
        assert "Incorrect number of bindings" in wrong_count[1]
        too_big = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", [("a", 2**63, 1)])
        assert too_big[0] is OverflowError

    def test_what_follows_the_statement_is_judged_as_executemany_judges_it(self, pair: Any) -> None:
        ran = _same(pair, "INSERT INTO t VALUES (?, ?, ?); -- the end\n /* really */ ", [("a", 1, 1)])
        assert ran == ("ok", 1)
        # SQLite stops at a NUL, and would run the statement before it as if it were all
        cut = _same(pair, "INSERT INTO t VALUES (?, ?, ?)\x00; DROP TABLE t", [("b", 1, 1)])
        assert cut == (sqlite3.ProgrammingError, "the query contains a null character", None)

    def test_a_value_past_int_max_bytes_is_an_overflow_error(self, pair: Any) -> None:
        huge = mmap.mmap(-1, 2**31)  # 2 GiB mapped, none of it touched
        try:
            outcome = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", [("a", huge, 1)])
        finally:
            huge.close()
        assert outcome == (OverflowError, "BLOB longer than INT_MAX bytes", None)

    @pytest.mark.parametrize("at", [0, 4095, 4096, 4097, 9000])
    def test_a_bad_row_past_a_block_raises_after_the_rows_before_it(self, pair: Any, at: int) -> None:
        """Rows are read in blocks of 4,096 and each block stepped at once: wherever the bad row
        falls, the rows before it are written (as executemany writes them) and its error raised."""
        rows: list[Any] = [(f"k{n}", n, "x" * (n % 7)) for n in range(10_000)]
        rows[at] = (f"k{at}", Decimal("1.5"), "")
        outcome = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", rows)
        assert outcome[0] is sqlite3.ProgrammingError and "parameter 2" in outcome[1]
        assert pair[0].execute("SELECT COUNT(*) FROM t").fetchone() == (at,)

    @pytest.mark.parametrize("at", [4095, 4096, 9999])
    def test_a_failing_step_past_a_block_wins_over_a_bad_row_after_it(self, pair: Any, at: int) -> None:
        rows: list[Any] = [(f"k{n}", n, None) for n in range(10_000)]
        rows[at] = ("k1", at, None)  # a duplicate key: its step fails
        if at + 1 < len(rows):
            rows[at + 1] = ("late", object(), None)  # unreadable, but after the failing step
        outcome = _same(pair, "INSERT INTO t VALUES (?, ?, ?)", rows)
        assert outcome == (sqlite3.IntegrityError, "UNIQUE constraint failed: t.k", 2067)
        assert _same(pair, "INSERT INTO t VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows[:at]) == ("ok", 0)

    def test_many_blocks_are_all_written_and_counted(self, pair: Any) -> None:
        rows = [
            (f"k{n}", n if n % 3 else float(n) / 2, b"b" * (n % 5) if n % 2 else None) for n in range(12_289)
        ]
        assert _same(pair, "INSERT INTO t VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows) == ("ok", 12_289)

    def test_a_statement_returning_rows_is_refused_not_miscounted(self, pair: Any) -> None:
        fast, _ = pair
        for sql in ("INSERT INTO t VALUES (?, ?, ?) RETURNING k", "SELECT ?, ?, ?"):
            with pytest.raises(sqlite3.ProgrammingError, match="return no rows"):
                insert_rows(fast, sql, [("a", 1, 1), ("b", 2, 2)])

    def test_an_unsupported_value_is_refused_not_guessed(self, pair: Any) -> None:
        fast, _ = pair
        unsupported = r"parameter 2: type 'decimal\.Decimal' is not supported"
        with pytest.raises(sqlite3.ProgrammingError, match=unsupported):
            insert_rows(fast, "INSERT INTO t VALUES (?, ?, ?)", [("a", Decimal("1.5"), 1)])
        with pytest.raises(TypeError, match="rows as tuples"):
            insert_rows(fast, "INSERT INTO t VALUES (?, ?, ?)", [["a", 1, 1]])
        with pytest.raises(sqlite3.ProgrammingError, match="exactly one statement"):
            insert_rows(fast, "INSERT INTO t VALUES (?, ?, ?); SELECT 1", [("a", 1, 1)])
        with pytest.raises(TypeError, match=r"sqlite3\.Connection"):
            insert_rows(object(), "INSERT INTO t VALUES (?, ?, ?)", [("a", 1, 1)])
        assert fast.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)

    def test_a_closed_connection_is_refused(self) -> None:
        connection = sqlite3.connect(":memory:")
        connection.close()
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            insert_rows(connection, "SELECT ?", [(1,)])

    def test_buffers_are_released_and_no_reference_is_kept(self) -> None:
        connection = sqlite3.connect(":memory:", isolation_level=None)
        connection.execute("CREATE TABLE t (a, b)")
        blob, text = bytearray(b"payload"), "text-" + "x" * 50
        rows = [(text, blob)] * 10
        gc.collect()
        before = (sys.getrefcount(blob), sys.getrefcount(text), sys.getrefcount(rows[0]))
        for _ in range(5):
            insert_rows(connection, "INSERT INTO t VALUES (?, ?)", rows)
            with pytest.raises(sqlite3.ProgrammingError):
                insert_rows(connection, "INSERT INTO t VALUES (?, ?)", [(text, blob, 1)])
        gc.collect()
        assert (sys.getrefcount(blob), sys.getrefcount(text), sys.getrefcount(rows[0])) == before
        blob.extend(b" grown")  # a buffer still exported would refuse the resize
        connection.close()


@contextmanager
def _ticking() -> Iterator[Callable[[], int]]:
    """A thread counting milliseconds meanwhile: the count tells whether it got the GIL."""
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        yield lambda: ticks
    finally:
        done.set()
        thread.join()


def test_other_threads_run_while_it_steps() -> None:
    """The GIL is let go while the rows are stepped, as executemany lets it go around each step: a
    writer in the process of a gateway or an app does not stop its other threads for a batch's
    duration."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE t (n)")
    slow_step = (
        "INSERT INTO t SELECT COUNT(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
        " FROM c WHERE x < ?) SELECT x FROM c)"
    )
    with _ticking() as ticks:
        began = time.monotonic()
        insert_rows(connection, slow_step, [(3_000_000,)])
        elapsed = time.monotonic() - began
        seen = ticks()
    assert elapsed > 0.1  # the step took long enough to tell
    assert seen >= 10  # the other thread ran meanwhile (held GIL: 0 or 1)
    connection.close()


def test_a_thread_busy_in_python_does_not_slow_it_row_by_row() -> None:
    """The rows are stepped in blocks of 4,096 with the GIL let go once per block. Let go and taken
    back for each row (as executemany does), a writer sharing its process with a thread busy in
    Python (an app's, the gateway's event loop) waits a switch interval for the GIL after every
    row: 10,000 rows here would take 10,000 x 20 ms = 200 s; in blocks, three hand-offs."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE t (n, s)")
    rows = [(n, f"row {n}") for n in range(10_000)]
    done = threading.Event()

    def busy() -> None:
        while not done.is_set():
            sum(range(1000))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.02)
    thread = threading.Thread(target=busy)
    thread.start()
    try:
        began = time.monotonic()
        assert insert_rows(connection, "INSERT INTO t VALUES (?, ?)", rows) == 10_000
        elapsed = time.monotonic() - began
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(previous)
    assert elapsed < 10
    connection.close()


def test_other_threads_run_while_it_waits_for_a_locked_database(tmp_path: Any) -> None:
    """Preparing the statement can wait for the connection's busy timeout (a schema to read while
    another connection holds the file's lock): executemany lets the GIL go for that too, so a
    process's other threads are not stopped for up to the timeout (the ledger's is a minute)."""
    path = str(tmp_path / "locked.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE t (n)")
    setup.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    connection = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    with _ticking() as ticks:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            insert_rows(connection, "INSERT INTO t VALUES (?)", [(1,)])
        seen = ticks()
    assert seen >= 10  # the other thread ran meanwhile (held GIL: 0 or 1)
    holder.rollback()
    insert_rows(connection, "INSERT INTO t VALUES (?)", [(1,)])
    assert connection.execute("SELECT n FROM t").fetchall() == [(1,)]
    for each in (holder, connection):
        each.close()


class TestTheLedger:
    def test_rows_with_raw_payloads_are_the_python_reference(self) -> None:
        events = awkward_events(200)
        payloads: list[Any] = [encode_event(e) for e in events]
        payloads[3] = bytearray(payloads[3])
        first = {e.event_id: i for i, e in enumerate(events)}
        rows, _ = event_rows(events, payloads, first, raw=True)
        expected, _ = event_rows_py(events, payloads, first, raw=True)
        assert rows == expected
        assert [type(r[-1]) for r in rows] == [type(r[-1]) for r in expected]
        assert type(rows[0][-1]) is bytes and rows[0][-1] is payloads[0]  # bound without a copy
        assert type(rows[3][-1]) is bytearray

    def test_compiled_and_executemany_ledgers_hold_the_same(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Writes, redeliveries and re-rating (day, month, hour and run upserts) give the same
        tables through insert_rows as through executemany."""
        events = awkward_events(400)
        payloads = [encode_event(e) for e in events]
        times = sorted(e.time for e in events)
        dumps = []
        for compiled in (True, False):
            if not compiled:
                monkeypatch.setattr(ledger_sqlite, "_INSERT_ROWS", None)
            ledger = SQLiteLedger(tmp_path / f"{compiled}.db")
            assert ledger.write(events[:250], payloads[:250]).inserted == 250
            assert ledger.write(events[200:], payloads[200:]).inserted == 150  # 50 redelivered
            while ledger.maintain():  # roll up by hour, so re-rating adjusts the hours too
                pass
            rerate(ledger, _corrected, "2000-01-01", "2100-01-01", at=events[0].time)
            start, end = date(2000, 1, 1), date(2100, 1, 1)
            dumps.append(
                (
                    sorted(ledger.rollup_totals(GROUP_KEYS, start, end), key=repr),
                    sorted(ledger.runs(run_ids=sorted({e.run_id for e in events if e.run_id})), key=repr),
                    ledger.event_count(),
                    [(e.event, e.cost, e.adjustments) for e in ledger.entries(times[0], times[-1])],
                )
            )
            ledger.close()
        assert dumps[0] == dumps[1]
        assert dumps[0][2] == 400


def _corrected(event: CostEvent) -> Rating:
    price = Decimal("0.000000000000000003")
    cost = MONEY_CONTEXT.multiply(price, Decimal(event.usage.input_tokens))
    return Rating(cost=cost, priced=True, price_version="fix")


def test_without_this_pythons_sqlite_it_falls_back_to_executemany(tmp_path: Any) -> None:
    """A SQLite library of another version than ``sqlite3`` reports (say, one built into
    ``_sqlite3`` and another on the path) is not used: the ledger writes with executemany."""
    script = (
        "import sqlite3; sqlite3.sqlite_version_info = (3, 0, 0);"
        "from outlay.ledger import SQLiteLedger; from outlay.ledger._sqlite import compiled_inserts;"
        "from outlay.ledger import speedups; assert speedups() and not compiled_inserts();"
        "import sys; sys.path.insert(0, 'tests'); from ledger.conftest import awkward_events;"
        f"ledger = SQLiteLedger({str(tmp_path / 'l.db')!r}); print(ledger.write(awkward_events(50)).inserted)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, cwd=_root()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "50"


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _amounts() -> st.SearchStrategy[Decimal]:
    """Amounts of every shape: money-like (up to 40 places), huge, tiny, negative, zeros."""
    return st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=70),
        st.integers(-80, 30),
    )


class TestCompiledDadd:
    """``outlay_dadd`` in C: the same text as the Python function, or the same failure."""

    @pytest.fixture
    def connection(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(":memory:")
        ledger_sqlite._SPEEDUPS.register_dadd(connection, dadd)
        yield connection
        connection.close()

    @staticmethod
    def _both(connection: sqlite3.Connection, left: Any, right: Any) -> Any:
        try:
            expected: Any = dadd(left, right)
        except Exception:  # Python's refusal; SQLite reports it as a failed user function
            expected = "user-defined function raised exception"
        try:
            got: Any = connection.execute("SELECT outlay_dadd(?, ?)", (left, right)).fetchone()[0]
        except sqlite3.OperationalError as exc:
            got = str(exc)
        assert got == expected, (left, right)
        return got

    @settings(max_examples=500, deadline=None)
    @given(left=_amounts(), right=_amounts(), plain=st.booleans())
    def test_generated_amounts(self, left: Decimal, right: Decimal, plain: bool) -> None:
        def text(amount: Decimal) -> str:
            return format(amount, "f") if plain else str(amount)

        connection = sqlite3.connect(":memory:")
        ledger_sqlite._SPEEDUPS.register_dadd(connection, dadd)
        try:
            self._both(connection, text(left), text(right))
        finally:
            connection.close()

    def test_edges(self, connection: sqlite3.Connection) -> None:
        cases = [
            ("1.5", "2.25", "3.75"),
            ("-1.5", "1.5", "0"),
            ("-0", "-0", "0"),
            ("007.50", "0.5", "8"),
            ("0.000000018750000000", "12", "12.00000001875"),
            ("-3", "1.25", "-1.75"),
            ("1.25", "-3", "-1.75"),
            ("9" * 59, "1", "1" + "0" * 59),
            ("0." + "0" * 90 + "1", "1", None),  # 92 digits: MONEY_CONTEXT refuses (Inexact)
            ("9" * 60, "1", "1" + "0" * 60),  # 61 digits, the last a zero: Python rounds it exactly
            ("1e3", "1", "1001"),  # not plain: Python's
            ("1_0", "1", "11"),
            (" 1", "1", "2"),
            ("abc", "1", None),
            (None, "1.50", "1.50"),  # NULL: the other as it is
            ("2", None, "2"),
            (None, None, None),
            (5, "1.5", "6.5"),
            ("1." + "0" * 200, "1", "2"),  # longer than the C code takes: Python's
        ]
        for left, right, want in cases:
            got = self._both(connection, left, right)
            if want is None and got is not None:
                assert got == "user-defined function raised exception", (left, right, got)
            else:
                assert got == want, (left, right, got)

    def test_the_fallback_is_released_with_the_connection(self) -> None:
        def fallback(left: Any, right: Any) -> str | None:
            return dadd(left, right)

        gc.collect()
        before = sys.getrefcount(fallback)
        for _ in range(3):
            connection = sqlite3.connect(":memory:")
            ledger_sqlite._SPEEDUPS.register_dadd(connection, fallback)
            ledger_sqlite._SPEEDUPS.register_dadd(connection, fallback)  # the first is replaced
            assert sys.getrefcount(fallback) == before + 1
            assert connection.execute("SELECT outlay_dadd('1e1', '1')").fetchone() == ("11",)
            connection.close()
        assert sys.getrefcount(fallback) == before


class TestCompiledDsum:
    """``outlay_dsum`` in C: per group, the same text as the Python aggregate, or the same failure;
    a group it hands to Python mid-way (a value of another form) is summed exactly all the same."""

    @staticmethod
    def _sums(compiled: bool, groups: list[list[Any]]) -> list[Any]:
        connection = sqlite3.connect(":memory:")
        try:
            register_functions(connection)
            if compiled:
                ledger_sqlite._SPEEDUPS.register_dsum(connection, DecimalSum)
            connection.execute("CREATE TABLE t (g INTEGER, x)")
            connection.executemany(
                "INSERT INTO t VALUES (?, ?)", [(g, v) for g, values in enumerate(groups) for v in values]
            )
            out: list[Any] = []
            for g in range(len(groups)):  # one query per group: a failing group fails alone
                try:
                    row = connection.execute("SELECT outlay_dsum(x) FROM t WHERE g = ?", (g,)).fetchone()
                    out.append(row[0])
                except sqlite3.OperationalError as exc:
                    out.append(str(exc))
            failed = any(isinstance(v, str) and v.startswith("user-defined") for v in out)
            # All groups in one statement too (contexts side by side, some handed to Python).
            grouped = (
                [] if failed else connection.execute("SELECT g, outlay_dsum(x) FROM t GROUP BY g").fetchall()
            )
            return [out, grouped]
        finally:
            connection.close()

    @settings(max_examples=300, deadline=None)
    @given(
        groups=st.lists(st.lists(st.one_of(st.none(), _amounts()), max_size=12), min_size=1, max_size=4),
        plain=st.booleans(),
    )
    def test_generated_groups(self, groups: list[list[Decimal | None]], plain: bool) -> None:
        def text(amount: Decimal | None) -> str | None:
            if amount is None:
                return None
            return format(amount, "f") if plain else str(amount)

        values = [[text(a) for a in group] for group in groups]
        assert self._sums(True, values) == self._sums(False, values)

    def test_edges(self) -> None:
        groups: list[list[Any]] = [
            [],
            [None, None],
            ["1.50"],
            ["-0.00"],
            ["0.000000018750000000", "12", None, "-3"],
            ["1", "1e3", "2"],  # handed to Python mid-group: the sum so far goes with it
            ["1", "abc", "2"],
            ["9" * 59, "1"],
            ["0." + "0" * 90 + "1", "1"],  # 92 digits: MONEY_CONTEXT refuses (Inexact)
            ["9" * 70],  # one value: Python keeps it as it is
            [5, "1.5", 2.5],
            [b"1"],
            ["1." + "0" * 200, "1"],
        ]
        compiled, python = self._sums(True, groups), self._sums(False, groups)
        assert compiled == python
        assert compiled[0][:7] == [None, None, "1.5", "0", "9.00000001875", "1003", compiled[0][6]]
        assert compiled[0][6] == "user-defined aggregate's 'step' method raised error"

    def test_the_aggregate_class_is_released_with_the_connection(self) -> None:
        class Counting(DecimalSum):
            pass

        gc.collect()
        before = sys.getrefcount(Counting)
        for _ in range(3):
            connection = sqlite3.connect(":memory:")
            ledger_sqlite._SPEEDUPS.register_dsum(connection, Counting)
            ledger_sqlite._SPEEDUPS.register_dsum(connection, Counting)  # the first is replaced
            connection.execute("CREATE TABLE t (x)")
            connection.executemany("INSERT INTO t VALUES (?)", [("1",), ("1e1",)])
            assert connection.execute("SELECT outlay_dsum(x) FROM t").fetchone() == ("11",)
            connection.close()
        gc.collect()
        assert sys.getrefcount(Counting) == before


def test_only_the_sqlite_that_implements_the_connection_class_is_used() -> None:
    """The SQLite functions come from the shared object whose code implements the connection
    class (and what it was loaded with): a class implemented elsewhere, as a replacement module
    bundling its own SQLite would be, is not given another library's functions."""
    script = (
        "import sqlite3; from outlay.ledger import _sqlite as L; s = L._SPEEDUPS;"
        "errors = (sqlite3.IntegrityError, sqlite3.OperationalError, sqlite3.DatabaseError,"
        " sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InternalError);"
        "v = sqlite3.sqlite_version_info; number = v[0] * 1_000_000 + v[1] * 1_000 + v[2]\n"
        "class Sub(sqlite3.Connection): pass\n"
        "class Elsewhere:\n    def cursor(self): pass\n"
        "print(s.configure_sqlite(number, Sub, *errors), s.configure_sqlite(number, dict, *errors),"
        " s.configure_sqlite(number, Elsewhere, *errors), s.configure_sqlite(number + 1, Sub, *errors))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "False"]
