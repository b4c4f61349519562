"""Period close: a stable seal, tamper detection, corrections after the close go to the next period."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outlay._errors import InvalidInput
from outlay._rating import Rating
from outlay.finance import (
    InMemoryPeriodStore,
    SQLitePeriodStore,
    audit_csv,
    audit_csv_sha256,
    audit_rows,
    close_period,
    period_items,
    period_store_for,
    seal_items,
    verify_period,
)
from outlay.ledger import InMemoryLedger, SQLiteLedger

from .conftest import MARCH, D, event

CLOSE = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 4, 20, 9, 0, tzinfo=UTC)


def _seed(ledger: InMemoryLedger | SQLiteLedger) -> list[str]:
    events = [
        event(cost=D("0.1")),
        event(cost=D("0.000000000000000001"), time=MARCH + timedelta(days=1)),
        event(priced=False, model="mystery"),
        event(tenant_id="globex", cost=D("1"), region="us-east-1", retention="0d"),
        event(time=MARCH.replace(month=2), cost=D("7")),  # February: not in the March seal
    ]
    ledger.write(events)
    return [e.event_id for e in events]


def test_seal_is_stable_and_verifies(ledger: InMemoryLedger) -> None:
    _seed(ledger)
    store = InMemoryPeriodStore()
    seal, created = close_period(ledger, "2026-03", store, now=CLOSE)
    assert created and seal.entries == 4 and seal.unpriced == 1
    assert seal.total == D("1.100000000000000001")
    assert seal.tenants["acme"].entries == 3 and seal.tenants["globex"].total == D("1")
    again, created_again = close_period(ledger, "2026-03", store, now=LATER)
    assert again == seal and not created_again  # closing twice changes nothing
    assert verify_period(ledger, "2026-03", store).ok
    # the hash depends only on content, not on the order the ledger returns entries in
    items = period_items(ledger, store, "2026-03")
    assert seal_items("2026-03", list(reversed(items)), CLOSE).sha256 == seal.sha256


def test_verify_detects_a_tampered_entry(ledger: InMemoryLedger) -> None:
    _seed(ledger)
    store = InMemoryPeriodStore()
    close_period(ledger, "2026-03", store, now=CLOSE)
    items = period_items(ledger, store, "2026-03")
    changes: list[dict[str, Any]] = [
        {"cost": D("0.1000001")},
        {"price_version": "v2"},
        {"tenant": "globex"},
        {"time": MARCH + timedelta(microseconds=1)},
        {"priced": False},
    ]
    for change in changes:
        # one entry changed, every other one as it was
        tampered = [dataclasses.replace(items[0], **change), *items[1:]]
        result = verify_period(ledger, "2026-03", store, items=tampered)
        assert not result.ok and result.actual_sha256 != result.sealed_sha256, change
    dropped = verify_period(ledger, "2026-03", store, items=items[1:])
    assert not dropped.ok and dropped.actual_entries == 3
    # a new event slipped into the closed month is detected too
    ledger.write([event(time=MARCH + timedelta(days=3), cost=D("0.01"))])
    assert not verify_period(ledger, "2026-03", store).ok


def test_rerate_after_close_keeps_the_seal_and_lands_in_the_next_period(ledger: InMemoryLedger) -> None:
    ids = _seed(ledger)
    store = InMemoryPeriodStore()
    close_period(ledger, "2026-03", store, now=CLOSE)
    ledger.append_adjustments([(ids[0], Rating(D("0.25"), True, "v2"))], at=LATER)
    ledger.append_adjustments([(ids[2], Rating(D("0.05"), True, "v2"))], at=LATER)  # unpriced -> priced
    assert verify_period(ledger, "2026-03", store).ok  # the sealed hash did not change
    march = audit_rows(ledger, store, "acme", "2026-03")
    assert [r["cost"] for r in march if r["kind"] == "event"] == ["0.1", None, "0.000000000000000001"]
    april = audit_rows(ledger, store, "acme", "2026-04")
    assert [(r["kind"], r["event_id"], r["cost"], r["price_version"]) for r in april] == [
        ("correction", ids[0], "0.15", "v2"),
        ("correction", ids[2], "0.05", "v2"),
    ]
    assert audit_rows(ledger, store, "globex", "2026-04") == []
    # closing April seals the carried corrections with it
    april_seal, _ = close_period(ledger, "2026-04", store, now=datetime(2026, 5, 1, 1, tzinfo=UTC))
    assert april_seal.entries == 2 and april_seal.total == D("0.2")
    assert verify_period(ledger, "2026-04", store).ok


def test_a_correction_before_the_close_is_part_of_the_period(ledger: InMemoryLedger) -> None:
    ids = _seed(ledger)
    ledger.append_adjustments([(ids[0], Rating(D("0.3"), True, "v2"))], at=CLOSE - timedelta(hours=1))
    store = InMemoryPeriodStore()
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    assert seal.total == D("1.300000000000000001")
    assert audit_rows(ledger, store, "acme", "2026-04") == []


def test_a_backdated_adjustment_breaks_the_seal(ledger: InMemoryLedger) -> None:
    ids = _seed(ledger)
    store = InMemoryPeriodStore()
    close_period(ledger, "2026-03", store, now=CLOSE)
    # an adjustment appended now but dated before the close rewrites sealed history: detected
    ledger.append_adjustments([(ids[0], Rating(D("0.3"), True, "v2"))], at=CLOSE - timedelta(days=1))
    assert not verify_period(ledger, "2026-03", store).ok


def test_bad_closes_are_refused(ledger: InMemoryLedger) -> None:
    store = InMemoryPeriodStore()
    with pytest.raises(InvalidInput, match="has not ended") as info:
        close_period(ledger, "2026-03", store, now=datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    assert info.value.field == "period" and store.get("2026-03") is None
    with pytest.raises(InvalidInput, match="not closed"):
        verify_period(ledger, "2026-03", store)
    with pytest.raises(InvalidInput):
        close_period(ledger, "2026-13", store, now=CLOSE)
    with pytest.raises(InvalidInput, match="now: must be a timezone-aware datetime"):
        close_period(ledger, "2026-03", store, now=datetime(2026, 4, 2))  # naive: which 2 April?


def test_seals_survive_a_restart_beside_a_sqlite_ledger(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "outlay.db")
    _seed(ledger)
    store = period_store_for(ledger)
    assert period_store_for(ledger) is store
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    assert (tmp_path / "periods.db").exists()
    reopened = SQLitePeriodStore(tmp_path / "periods.db")
    assert reopened.get("2026-03") == seal and reopened.all() == [seal]
    assert verify_period(ledger, "2026-03", reopened).ok
    reopened.close()
    ledger.close()


def test_two_ledgers_in_one_directory_keep_their_own_seals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAY_PERIODS_DB", raising=False)
    prod, staging = SQLiteLedger(tmp_path / "prod.db"), SQLiteLedger(tmp_path / "staging.db")
    try:
        prod.write([event(cost=D("10"))])
        staging.write([event(cost=D("3")), event(tenant_id="globex", cost=D("4"))])
        prod_seal, _ = close_period(prod, "2026-03", period_store_for(prod), now=CLOSE)
        staging_seal, created = close_period(staging, "2026-03", period_store_for(staging), now=CLOSE)
        assert created  # not prod's seal handed back
        assert (prod_seal.entries, staging_seal.entries) == (1, 2)
        assert verify_period(staging, "2026-03", period_store_for(staging)).ok
        assert verify_period(prod, "2026-03", period_store_for(prod)).ok
        assert sorted(p.name for p in tmp_path.glob("*.periods.db")) == [
            "prod.periods.db",
            "staging.periods.db",
        ]
    finally:
        prod.close()
        staging.close()


def test_concurrent_closes_store_one_seal(tmp_path: Path) -> None:
    ledger = InMemoryLedger()
    _seed(ledger)
    store = SQLitePeriodStore(tmp_path / "periods.db")
    results: list[tuple[object, bool]] = []

    def close(offset: int) -> None:
        results.append(close_period(ledger, "2026-03", store, now=CLOSE + timedelta(seconds=offset)))

    threads = [threading.Thread(target=close, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seal == results[0][0] for seal, _ in results)
    assert sum(created for _, created in results) == 1
    assert store.all() == [results[0][0]]
    store.close()


def test_periods_db_can_be_configured_for_any_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAY_PERIODS_DB", str(tmp_path / "seals.db"))
    ledger = InMemoryLedger()
    _seed(ledger)
    store = period_store_for(ledger)
    assert isinstance(store, SQLitePeriodStore)
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    reopened = SQLitePeriodStore(tmp_path / "seals.db")
    assert reopened.get("2026-03") == seal
    reopened.close()


def test_a_customer_verifies_its_audit_export_alone(ledger: InMemoryLedger) -> None:
    ids = _seed(ledger)
    store = InMemoryPeriodStore()
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    body = audit_csv(audit_rows(ledger, store, "acme", "2026-03"))
    assert audit_csv_sha256(body) == seal.tenants["acme"].sha256
    # a rerate after the close changes nothing in the sealed export
    ledger.append_adjustments([(ids[0], Rating(D("0.25"), True, "v2"))], at=LATER)
    assert audit_csv(audit_rows(ledger, store, "acme", "2026-03")) == body
    # any edit of the file is caught: a cost, a region, a dropped row
    assert audit_csv_sha256(body.replace(b",0.1,", b",0.01,")) != seal.tenants["acme"].sha256
    assert audit_csv_sha256(body.replace(b"eu-west-1", b"us-east-1", 1)) != seal.tenants["acme"].sha256
    lines = body.splitlines(keepends=True)
    assert audit_csv_sha256(b"".join(lines[:-1])) != seal.tenants["acme"].sha256
    with pytest.raises(InvalidInput) as info:
        audit_csv_sha256(b"kind,id\nevent,x\n")
    assert info.value.field == "body"


def test_a_tenant_none_of_whose_entries_is_priced_has_an_unknown_total_not_zero(tmp_path: Path) -> None:
    from outlay.api._audit import seal_header

    ledger = SQLiteLedger(tmp_path / "outlay.db")
    ledger.write([event(tenant_id="initech", priced=False, model="mystery") for _ in range(2)])
    ledger.write([event(cost=D("0.25"))])
    store = SQLitePeriodStore(tmp_path / "periods.db")
    seal, _ = close_period(ledger, "2026-03", store, now=CLOSE)
    part = seal.to_json("initech")
    # Every report says null for initech's cost; the seal said "0" beside unpriced=2.
    assert (part["total"], part["unpriced"], part["entries"]) == (None, 2, 2)
    assert seal.tenants["acme"].total == D("0.25") and seal.total == D("0.25")
    assert "total=unknown" in seal_header(seal, "initech")
    store.close()
    reopened = SQLitePeriodStore(tmp_path / "periods.db")
    assert reopened.get("2026-03") == seal  # an unknown total survives the store
    assert verify_period(ledger, "2026-03", reopened).ok
    # A month with nothing priced at all has an unknown grand total too, and it is stored as such.
    ledger.write([event(tenant_id="initech", priced=False, time=MARCH.replace(month=5))])
    may, _ = close_period(ledger, "2026-05", reopened, now=LATER.replace(month=6))
    assert may.total is None and may.to_json()["total"] is None
    assert reopened.get("2026-05") == may
    reopened.close()
    ledger.close()


def test_a_close_during_a_rerating_commit_seals_what_verify_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A re-rating stamped its adjustment before the close's cutoff but committed after the close had
    # read the ledger: the seal missed it and verify_period failed on an untouched ledger.
    ledger = SQLiteLedger(tmp_path / "outlay.db")
    ids = _seed(ledger)
    inside = threading.Event()
    apply = SQLiteLedger._apply

    def slow_apply(*args: Any, **kwargs: Any) -> None:  # the adjustment's transaction is open here
        inside.set()
        threading.Event().wait(0.5)
        apply(*args, **kwargs)

    monkeypatch.setattr(SQLiteLedger, "_apply", staticmethod(slow_apply))
    other = SQLiteLedger(tmp_path / "outlay.db")
    rerating = threading.Thread(
        target=lambda: other.append_adjustments([(ids[0], Rating(D("0.3"), True, "v2"))])
    )
    rerating.start()
    assert inside.wait(10)
    store = InMemoryPeriodStore()
    seal, _ = close_period(ledger, "2026-03", store)
    rerating.join()
    adjustment = ledger.adjustments()[0]
    assert adjustment.time < seal.closed_at
    assert seal.total == D("1.300000000000000001")
    assert verify_period(ledger, "2026-03", store).ok
    other.close()
    ledger.close()


def test_who_closed_a_period_is_kept_and_old_seal_files_still_open(tmp_path: Path) -> None:
    import sqlite3

    # A seal file written before seals named who closed them: it opens, its seals read as closed
    # by no one known, and a new close records its closer.
    old = sqlite3.connect(tmp_path / "periods.db")
    old.execute(
        "CREATE TABLE period_seals (period TEXT PRIMARY KEY, sha256 TEXT NOT NULL, entries INTEGER NOT NULL,"
        " total TEXT NOT NULL, unpriced INTEGER NOT NULL, closed_at TEXT NOT NULL, tenants TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO period_seals VALUES ('2026-02', ?, 0, '0', 0, '2026-03-02T09:00:00+00:00', '{}')",
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",),
    )
    old.commit()
    old.close()
    ledger = SQLiteLedger(tmp_path / "outlay.db")
    _seed(ledger)
    store = SQLitePeriodStore(tmp_path / "periods.db")
    february = store.get("2026-02")
    assert february is not None and february.closed_by is None
    assert february.to_json()["closed_by"] is None
    seal, created = close_period(ledger, "2026-03", store, now=CLOSE, closed_by="finance")
    assert created and seal.closed_by == "finance" and seal.to_json()["closed_by"] == "finance"
    assert "closed_by" not in seal.to_json("acme")
    store.close()
    reopened = SQLitePeriodStore(tmp_path / "periods.db")
    assert reopened.get("2026-03") == seal
    again, created = close_period(ledger, "2026-03", reopened, now=LATER, closed_by="someone-else")
    assert not created and again.closed_by == "finance"  # the first close stands
    assert verify_period(ledger, "2026-03", reopened).ok
    reopened.close()
    ledger.close()
