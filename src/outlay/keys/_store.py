"""Key stores: where virtual keys live, looked up by the SHA-256 of the secret.

:class:`InMemoryKeyStore` for tests; :class:`SQLiteKeyStore` (default ``.outlay/keys.db``, beside the
ledger) shared by the CLI and every gateway worker on one machine. :func:`open_key_store` picks one
from a URL (``--keys`` / ``OUTLAY_KEYS_URL``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from outlay._errors import BackendError, ConfigError, InvalidInput
from outlay._sqlite import use_wal
from outlay._urls import refuse_url_like_path
from outlay.ledger._open import ledger_file

from ._key import DISPLAY_CHARS, VirtualKey, generate_secret, hash_secret, new_key_id, parse_budget

__all__ = ["InMemoryKeyStore", "KeyStore", "SQLiteKeyStore", "default_keys_url", "open_key_store"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE,"
    " prefix TEXT NOT NULL, tenant TEXT NOT NULL, workspace TEXT, feature TEXT, name TEXT,"
    " budget TEXT, period TEXT, created_at TEXT NOT NULL, revoked_at TEXT)"
)
_COLUMNS: Final = "id, prefix, tenant, created_at, workspace, feature, name, budget, period, revoked_at"


class KeyStore(ABC):
    """Create, find, list and revoke virtual keys. Implementations are thread-safe."""

    def create(
        self,
        tenant: str,
        *,
        workspace: str | None = None,
        feature: str | None = None,
        name: str | None = None,
        budget: str | None = None,
    ) -> tuple[VirtualKey, str]:
        """A new key and its secret. The secret is returned here once and never stored.

        ``budget`` is ``AMOUNT[/PERIOD]`` (``"25.00/month"``).
        """
        limit, period = parse_budget(budget) if budget is not None else (None, None)
        secret = generate_secret()
        key = VirtualKey(
            id=new_key_id(),
            prefix=secret[:DISPLAY_CHARS],
            tenant=tenant,
            created_at=datetime.now(UTC),
            workspace=workspace,
            feature=feature,
            name=name,
            budget=limit,
            period=period,
        )
        self._insert(key, hash_secret(secret))
        return key, secret

    @abstractmethod
    def _insert(self, key: VirtualKey, digest: str) -> None: ...

    @abstractmethod
    def lookup(self, secret: str) -> VirtualKey | None:
        """The key whose secret this is (revoked ones included: the caller says why it refuses)."""

    @abstractmethod
    def get(self, key_id: str) -> VirtualKey | None: ...

    @abstractmethod
    def list_keys(self, *, tenant: str | None = None) -> list[VirtualKey]:
        """Every key (of ``tenant``), oldest first."""

    def revoke(self, key_id: str) -> VirtualKey:
        """Revoke a key for good (idempotent). Unknown ids raise :class:`InvalidInput`."""
        key = self.get(key_id)
        if key is None:
            raise InvalidInput(f"no key with id {key_id!r}", field="key_id")
        if key.revoked:
            return key
        revoked = replace(key, revoked_at=datetime.now(UTC))
        self._revoke(revoked)
        return revoked

    @abstractmethod
    def _revoke(self, key: VirtualKey) -> None: ...

    def close(self) -> None:  # noqa: B027  # optional for stores holding nothing
        """Release resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InMemoryKeyStore(KeyStore):
    """Keys in a dict (for tests and single-process demos)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, VirtualKey] = {}
        self._by_hash: dict[str, str] = {}

    def _insert(self, key: VirtualKey, digest: str) -> None:
        with self._lock:
            self._by_id[key.id] = key
            self._by_hash[digest] = key.id

    def lookup(self, secret: str) -> VirtualKey | None:
        key_id = self._by_hash.get(hash_secret(secret))
        return None if key_id is None else self._by_id.get(key_id)

    def get(self, key_id: str) -> VirtualKey | None:
        return self._by_id.get(key_id)

    def list_keys(self, *, tenant: str | None = None) -> list[VirtualKey]:
        with self._lock:
            keys = list(self._by_id.values())
        return [k for k in keys if tenant is None or k.tenant == tenant]

    def _revoke(self, key: VirtualKey) -> None:
        with self._lock:
            self._by_id[key.id] = key


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class SQLiteKeyStore(KeyStore):
    """Keys in one SQLite file (WAL), shared by the CLI and gateway processes on one machine."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            use_wal(self._conn, 30)
            self._conn.execute("PRAGMA synchronous=FULL")  # a created or revoked key survives a crash
            self._conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"key store {self.path}: cannot open: {exc}") from exc
        self._lock = threading.Lock()

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"key store {self.path}: {exc}") from exc

    @staticmethod
    def _row(row: tuple[Any, ...]) -> VirtualKey:
        key_id, prefix, tenant, created, workspace, feature, name, budget, period, revoked = row
        return VirtualKey(
            id=key_id,
            prefix=prefix,
            tenant=tenant,
            created_at=datetime.fromisoformat(created),
            workspace=workspace,
            feature=feature,
            name=name,
            budget=None if budget is None else Decimal(budget),
            period=period,
            revoked_at=_parse_time(revoked),
        )

    def _insert(self, key: VirtualKey, digest: str) -> None:
        self._execute(
            f"INSERT INTO keys (hash, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                digest, key.id, key.prefix, key.tenant, key.created_at.isoformat(), key.workspace,
                key.feature, key.name, None if key.budget is None else str(key.budget), key.period, None,
            ),
        )  # fmt: skip

    def lookup(self, secret: str) -> VirtualKey | None:
        rows = self._execute(f"SELECT {_COLUMNS} FROM keys WHERE hash = ?", (hash_secret(secret),))
        return self._row(rows[0]) if rows else None

    def get(self, key_id: str) -> VirtualKey | None:
        rows = self._execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        return self._row(rows[0]) if rows else None

    def list_keys(self, *, tenant: str | None = None) -> list[VirtualKey]:
        if tenant is None:
            rows = self._execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created_at, id")
        else:
            rows = self._execute(
                f"SELECT {_COLUMNS} FROM keys WHERE tenant = ? ORDER BY created_at, id",
                (tenant,),
            )
        return [self._row(row) for row in rows]

    def _revoke(self, key: VirtualKey) -> None:
        assert key.revoked_at is not None
        self._execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (key.revoked_at.isoformat(), key.id),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def default_keys_url(environ: dict[str, str] | None = None) -> str:
    """``OUTLAY_KEYS_URL``, else ``keys.db`` in the directory of the SQLite ledger (``OUTLAY_URL``),
    else ``.outlay/keys.db``."""
    env = os.environ if environ is None else environ
    explicit = env.get("OUTLAY_KEYS_URL")
    if explicit:
        return explicit
    home = env.get("OUTLAY_URL") or ""
    target = home.removeprefix("sqlite:")
    target = target[2:] if target.startswith("//") else target
    if not target or "://" in target:
        return str(Path(".outlay") / "keys.db")
    # The directory of the ledger file the home names, by the ledger's own rule: a home that does
    # not exist yet (``data/prod``) is a directory, as it will be once the ledger is created there.
    return str(ledger_file(target).parent / "keys.db")


def open_key_store(url: str | None = None, *, create: bool = True) -> KeyStore:
    """``memory://``, ``sqlite:PATH`` or a plain path (default: :func:`default_keys_url`). With
    ``create=False`` a missing file is an error, not a new empty store (``keys list`` on a mistyped
    path must not answer "no keys")."""
    target = url or default_keys_url()
    if target == "memory://":
        return InMemoryKeyStore()
    if target.startswith("sqlite:"):
        target = target.removeprefix("sqlite:")
        target = target[2:] if target.startswith("//") else target
    elif "://" in target:
        raise ConfigError(
            f"unsupported key store URL {target!r}; use a path, sqlite:PATH or memory://", field="keys"
        )
    else:
        refuse_url_like_path(target, field="keys", expected="a path, sqlite:PATH or memory://")
    if not create and not Path(target).expanduser().exists():
        raise ConfigError(
            f"no key store at {target!r} (create a key first, or pass --keys / set OUTLAY_KEYS_URL)",
            field="keys",
        )
    return SQLiteKeyStore(target)
