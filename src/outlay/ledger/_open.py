"""``open_ledger``: a ledger from a URL, as the CLI and configuration name it."""

from __future__ import annotations

import importlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Final

from outlay._errors import ConfigError
from outlay._urls import refuse_url_like_path

from ._base import LedgerStore
from ._memory import InMemoryLedger
from ._sqlite import SQLiteLedger

__all__ = ["DEFAULT_PATH", "companion_path", "ledger_file", "ledger_url", "open_ledger", "refuse_event_log"]

#: The embedded default, shared with ``outlay.configure`` (log and ledger live in ``./.outlay/``).
DEFAULT_PATH: Final = Path(".outlay") / "outlay.db"


def companion_path(ledger_path: Path, name: str) -> Path:
    """A file that belongs to one SQLite ledger, beside it: ``<name>.db`` for ``outlay.db`` (the
    default name), ``<stem>.<name>.db`` for any other (``prod.db`` -> ``prod.events.db``), so
    ledgers sharing a directory never share their event log or their period seals."""
    if ledger_path.name == DEFAULT_PATH.name:
        return ledger_path.with_name(f"{name}.db")
    return ledger_path.with_name(f"{ledger_path.stem}.{name}.db")


def ledger_url(url: str | None = None) -> str:
    """``url``, else ``OUTLAY_LEDGER_URL``, else ``OUTLAY_URL``, else the embedded default path.

    The same order as :class:`outlay.Outlay`, so ``outlay report``, ``outlay worker`` and ``outlay api``
    read the ledger that recording writes to.
    """
    return url or os.environ.get("OUTLAY_LEDGER_URL") or os.environ.get("OUTLAY_URL") or str(DEFAULT_PATH)


def open_ledger(url: str | None = None, *, create: bool = True) -> LedgerStore:
    """Open the ledger named by ``url`` (see :func:`ledger_url` for the default).

    - ``sqlite:///abs/path.db``, ``sqlite:rel/path.db`` or a plain path: :class:`SQLiteLedger`
      (a directory means ``<dir>/outlay.db``);
    - ``postgresql://...``: the PostgreSQL ledger (needs ``outlay[postgres]``);
    - ``memory://``: a new, empty :class:`InMemoryLedger`.

    With ``create=False`` a missing SQLite file (or a PostgreSQL schema with no ledger in it) is an
    error instead of a new, empty ledger, so a report never silently reads nothing from a mistyped
    path.
    """
    target = ledger_url(url)
    if target == "memory://":
        return InMemoryLedger()
    if target.startswith(("postgresql://", "postgres://")):
        try:
            module = importlib.import_module("outlay.ledger._postgres")
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"the PostgreSQL ledger is not available here ({exc.name} is missing);"
                " install outlay[postgres]",
                field="ledger",
            ) from None
        store: LedgerStore = module.PostgresLedger(target, create=create)
        return store
    if target.startswith("sqlite:"):
        target = target.removeprefix("sqlite:")
        target = target[2:] if target.startswith("//") else target
    elif "://" in target:
        raise ConfigError(
            f"unsupported ledger URL {target!r}; use a path, sqlite:PATH or postgresql://", field="ledger"
        )
    else:
        refuse_url_like_path(target, field="ledger", expected="a path, sqlite:PATH or postgresql://")
    path = ledger_file(target)
    if not create:
        if not path.exists():
            raise ConfigError(
                f"no ledger at {str(path)!r} (pass --ledger or set OUTLAY_LEDGER_URL or OUTLAY_URL)",
                field="ledger",
            )
        _check_is_ledger(path)
    return SQLiteLedger(path)


def ledger_file(target: str) -> Path:
    """The SQLite ledger file a path names: ``outlay.db`` inside a directory — one that exists, one
    written with a trailing ``/``, or a name with no extension that does not exist yet (``.outlay``,
    ``data/prod``) — else the file itself (``data/prod.db``)."""
    path = Path(target).expanduser()
    home = path.is_dir() or target.endswith("/") or (not path.exists() and not path.suffix)
    return path / DEFAULT_PATH.name if home else path


def refuse_event_log(path: Path) -> None:
    """Refuse, before a ledger is created in it, an existing SQLite file that is an outlay event log
    holding no ledger (``events.db`` given as the ledger by mistake): its events would never be
    written, the log beside it being another, empty file. A log that shares its file with the
    ledger on purpose is not checked here (the caller knows its log's path)."""
    if not path.is_file():
        return
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return  # not ours to judge: opening it as a ledger reports what is wrong with it
    if {"log", "consumers"} <= tables and "ledger_events" not in tables:
        raise ConfigError(
            f"{str(path)!r} is an outlay event log, not a ledger (give the ledger, e.g. outlay.db"
            " beside it; to keep both in one file, name that file as the event log too)",
            field="ledger",
        )


def _check_is_ledger(path: Path) -> None:
    """Refuse a SQLite file that holds other tables and no ledger (the event log, given by mistake):
    opening it would add empty ledger tables to it and report nothing."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        if not os.access(path.resolve().parent, os.W_OK | os.X_OK):
            # A WAL database is read through its -shm file, which SQLite makes beside it: the
            # file may be perfectly readable and still not open in a directory we cannot write.
            raise ConfigError(
                f"cannot open the ledger {str(path)!r}: its directory is not writable, and SQLite"
                f" needs to create its -wal and -shm files there ({exc})",
                field="ledger",
            ) from None
        raise ConfigError(f"{str(path)!r} is not a readable SQLite ledger: {exc}", field="ledger") from None
    if tables and "ledger_events" not in tables:
        what = "an outlay event log" if {"log", "consumers"} <= tables else "a database without a ledger"
        raise ConfigError(f"{str(path)!r} is {what}, not a ledger", field="ledger")
