"""Run the ledger conformance suite against the in-memory and SQLite ledgers (see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay._errors import ConfigError, InvalidInput
from outlay.ledger import InMemoryLedger, SQLiteLedger, open_ledger
from outlay.stream import SQLiteEventLog

from .conformance import DAY0, DAY_END, LedgerStoreConformance
from .conftest import awkward_events


class TestLedgerConformance(LedgerStoreConformance):
    """Parametrised over every embedded ledger by the ``make_ledger`` fixture."""


def test_sqlite_ledger_survives_reopening(tmp_path: Path) -> None:
    events = awkward_events(100)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.write(events)
        before = ledger.rollup_totals(["tenant", "day"], DAY0, DAY_END)
    with SQLiteLedger(tmp_path / "l.db") as reopened:
        assert reopened.write(events).duplicates == 100
        assert reopened.rollup_totals(["tenant", "day"], DAY0, DAY_END) == before


def test_sqlite_ledger_can_share_a_file_with_the_event_log(tmp_path: Path) -> None:
    path = tmp_path / "outlay.db"
    log = SQLiteEventLog(path)
    ledger = SQLiteLedger(path)
    try:
        log.append([b"payload"])
        assert ledger.write(awkward_events(10)).inserted == 10
        assert log.end_offset() == 1
        assert ledger.event_count() == 10
    finally:
        ledger.close()
        log.close()


def test_sqlite_ledger_refuses_memory_paths() -> None:
    with pytest.raises(InvalidInput, match="InMemoryLedger"):
        SQLiteLedger(":memory:")


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:{tmp_path}/b.db", str(tmp_path / "c.db")):
        with open_ledger(url) as ledger:
            assert isinstance(ledger, SQLiteLedger)
    with open_ledger(str(tmp_path)) as in_dir:
        assert isinstance(in_dir, SQLiteLedger)
        assert in_dir.path == tmp_path / "outlay.db"
    assert isinstance(open_ledger("memory://"), InMemoryLedger)
    monkeypatch.setenv("OUTLAY_URL", str(tmp_path / "env.db"))
    with open_ledger() as from_env:
        assert isinstance(from_env, SQLiteLedger)
        assert from_env.path == tmp_path / "env.db"
    monkeypatch.setenv("OUTLAY_LEDGER_URL", f"sqlite://{tmp_path}/ledger-only.db")  # wins, as in Outlay
    with open_ledger() as from_ledger_env:
        assert isinstance(from_ledger_env, SQLiteLedger)
        assert from_ledger_env.path == tmp_path / "ledger-only.db"
    with pytest.raises(ConfigError, match="no ledger at"):
        open_ledger(str(tmp_path / "missing.db"), create=False)
    with pytest.raises(ConfigError, match="unsupported ledger URL"):
        open_ledger("redis://localhost")
