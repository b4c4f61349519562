"""Where period seals are kept: in memory (tests) or a SQLite file (``periods.db`` beside the ledger).

A seal is written once and never updated: closing a closed period returns the stored seal.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from outlay._errors import BackendError
from outlay._money import money_str
from outlay._sqlite import use_wal
from outlay.ledger import LedgerStore, SQLiteLedger
from outlay.ledger._open import companion_path

__all__ = [
    "InMemoryPeriodStore",
    "PeriodStore",
    "SQLitePeriodStore",
    "Seal",
    "TenantSeal",
    "period_store_for",
]


PERIODS_ENV = "OUTLAY_PERIODS_DB"


@dataclass(frozen=True, slots=True)
class TenantSeal:
    """The part of a seal one tenant can check against its own audit export."""

    sha256: str
    entries: int
    total: Decimal | None  # None: entries, none of them priced (unknown, not 0)
    unpriced: int


@dataclass(frozen=True, slots=True)
class Seal:
    """A closed billing period: a SHA-256 over its canonical entries, their count and exact total."""

    period: str
    sha256: str
    entries: int
    total: Decimal | None  # None: entries, none of them priced (unknown, not 0)
    unpriced: int
    closed_at: datetime
    tenants: Mapping[str, TenantSeal] = field(default_factory=dict)
    #: Who closed the period (the API token's name), ``None`` when not known: the audit trail of
    #: an act that cannot be undone. Not part of what the hash covers.
    closed_by: str | None = None

    def to_json(self, tenant: str | None = None) -> dict[str, Any]:
        """The seal as JSON; with ``tenant``, only that tenant's part (nothing about the others, nor
        the operator's name of whoever closed it)."""
        head = {"period": self.period, "closed_at": self.closed_at.isoformat()}
        if tenant is not None:
            part = self.tenants.get(tenant, TenantSeal(_EMPTY_SHA, 0, Decimal(0), 0))
            return {**head, "tenant": tenant, **_part_json(part)}
        return {
            **head,
            "sha256": self.sha256,
            "entries": self.entries,
            "total": _total_text(self.total),
            "unpriced": self.unpriced,
            "tenants": {t: _part_json(p) for t, p in sorted(self.tenants.items())},
            "closed_by": self.closed_by,
        }


_EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256(b"")


def _total_text(total: Decimal | None) -> str | None:
    return None if total is None else money_str(total)


def _part_json(part: TenantSeal) -> dict[str, Any]:
    return {
        "sha256": part.sha256,
        "entries": part.entries,
        "total": _total_text(part.total),
        "unpriced": part.unpriced,
    }


class PeriodStore(ABC):
    @abstractmethod
    def get(self, period: str) -> Seal | None:
        """The seal of ``period``, or ``None`` if it is open."""

    @abstractmethod
    def put(self, seal: Seal) -> Seal:
        """Store ``seal`` unless its period is already sealed; returns the seal that is stored."""

    @abstractmethod
    def all(self) -> list[Seal]:
        """Every seal, oldest period first."""


class InMemoryPeriodStore(PeriodStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seals: dict[str, Seal] = {}

    def get(self, period: str) -> Seal | None:
        with self._lock:
            return self._seals.get(period)

    def put(self, seal: Seal) -> Seal:
        with self._lock:
            return self._seals.setdefault(seal.period, seal)

    def all(self) -> list[Seal]:
        with self._lock:
            return [self._seals[p] for p in sorted(self._seals)]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS period_seals (
    period TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    entries INTEGER NOT NULL,
    total TEXT NOT NULL,
    unpriced INTEGER NOT NULL,
    closed_at TEXT NOT NULL,
    tenants TEXT NOT NULL,
    closed_by TEXT
)
"""
_COLUMNS = "period, sha256, entries, total, unpriced, closed_at, tenants, closed_by"


class SQLitePeriodStore(PeriodStore):
    """Seals in their own SQLite file, so the ledger's schema is untouched."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            use_wal(self._db, 30)
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(period_seals)")}
            if "closed_by" not in columns:  # a file from before seals named who closed them
                self._db.execute("ALTER TABLE period_seals ADD COLUMN closed_by TEXT")
        except sqlite3.Error as exc:
            raise BackendError(f"period store {str(self.path)!r}: {exc}") from exc

    def _rows(self, where: str, args: tuple[str, ...]) -> list[Seal]:
        sql = f"SELECT {_COLUMNS} FROM period_seals {where}"
        try:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"period store {str(self.path)!r}: {exc}") from exc
        return [_seal_of(row) for row in rows]

    def get(self, period: str) -> Seal | None:
        found = self._rows("WHERE period = ?", (period,))
        return found[0] if found else None

    def put(self, seal: Seal) -> Seal:
        tenants = {
            t: [p.sha256, p.entries, _total_text(p.total), p.unpriced] for t, p in seal.tenants.items()
        }
        # An unknown total is '' in the column (NOT NULL in files made before it could be unknown).
        row = (seal.period, seal.sha256, seal.entries, _total_text(seal.total) or "", seal.unpriced,
               seal.closed_at.isoformat(), json.dumps(tenants, sort_keys=True), seal.closed_by)  # fmt: skip
        try:
            with self._lock:
                # INSERT OR IGNORE: two concurrent closes store one seal, and both return it.
                self._db.execute(
                    f"INSERT OR IGNORE INTO period_seals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row
                )
        except sqlite3.Error as exc:
            raise BackendError(f"period store {str(self.path)!r}: {exc}") from exc
        stored = self.get(seal.period)
        assert stored is not None
        return stored

    def all(self) -> list[Seal]:
        return self._rows("ORDER BY period", ())

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _seal_of(row: tuple[Any, ...]) -> Seal:
    period, sha, entries, total, unpriced, closed_at, tenants, closed_by = row
    parts = {
        t: TenantSeal(p[0], int(p[1]), None if p[2] is None else Decimal(p[2]), int(p[3]))
        for t, p in json.loads(tenants).items()
    }
    amount = Decimal(total) if total != "" else None
    closed = datetime.fromisoformat(closed_at)
    return Seal(period, sha, int(entries), amount, int(unpriced), closed, parts, closed_by)


_STORES: weakref.WeakKeyDictionary[LedgerStore, PeriodStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def period_store_for(ledger: LedgerStore) -> PeriodStore:
    """The store of ``ledger``'s seals: the SQLite file ``$OUTLAY_PERIODS_DB`` if set, else
    ``periods.db`` beside a SQLite ledger ``outlay.db`` (``<name>.periods.db`` beside any other, so
    two ledgers in one directory never share seals), else one in-memory store per ledger object (enough for
    tests and short-lived tools; set ``OUTLAY_PERIODS_DB`` with a PostgreSQL ledger)."""
    with _STORES_LOCK:
        store = _STORES.get(ledger)
        if store is None:
            configured = os.environ.get(PERIODS_ENV)
            if configured:
                store = SQLitePeriodStore(configured)
            elif isinstance(ledger, SQLiteLedger):
                store = SQLitePeriodStore(companion_path(ledger.path, "periods"))
            else:
                store = InMemoryPeriodStore()
            _STORES[ledger] = store
        return store
