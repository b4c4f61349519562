"""Connections of the PostgreSQL ledger: one per thread, migrations, partitions, retries, errors.

A connection that breaks (server restarted, backend terminated, network cut) is dropped and the
work retried on a fresh one. That is safe because every ledger operation is idempotent: event ids
and reject digests are claimed with ``ON CONFLICT DO NOTHING``, and a re-rating is compared with the
current effective cost, so a retry after a commit whose acknowledgement was lost counts nothing
twice. A server that cannot be reached raises ``BackendUnavailable``; the ledger writer backs off.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from datetime import date
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import errors

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay._thread_end import at_thread_end

from ._postgres_schema import (
    LOCK_MIGRATIONS,
    LOCK_PARTITIONS,
    MIGRATIONS,
    SCHEMA_NAME,
    STAGING,
    partition_ddl,
)

__all__ = ["Connection", "Session"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]

_ATTEMPTS: Final = 3
_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
#: libpq also reads a password from the query (``?password=...``; keys are percent-decoded too).
_QUERY_FIELD: Final = re.compile(r"([?&])([^=&#]*)=([^&#]*)")


def _masked(url: str) -> str:
    """``url`` with any password (in the user part or the query) replaced by ``***``."""

    def field(match: re.Match[str]) -> str:
        if unquote(match[2]) == "password":
            return f"{match[1]}{match[2]}=***"
        return match[0]

    return _QUERY_FIELD.sub(field, _PASSWORD.sub(r"\1***@", url))


#: The partitions attached to the events table (a detached one keeps its name but is not listed).
_ATTACHED: Final = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = %s::regclass"
)
_EXISTS: Final = "SELECT to_regclass(%s)"
_MIGRATIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS {s}.schema_migrations (version integer PRIMARY KEY,"
    " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
)


def _split_schema(url: str, schema: str | None) -> tuple[str, str]:
    """Take outlay's own ``?schema=`` parameter out of ``url`` (libpq would refuse it).

    The other parameters are passed on byte for byte: libpq percent-decodes them but reads ``+``
    as a plus sign, so decoding and re-encoding them (``+`` for a space) would change their values
    (``options=-c%20TimeZone%3DUTC`` would become ``-c+TimeZone=UTC``, refused by the server).
    """
    parts = urlsplit(url)
    kept: list[str] = []
    named: list[str] = []
    for field in parts.query.split("&") if parts.query else ():
        key, _, value = field.partition("=")
        if unquote(key) == "schema":
            named.append(unquote(value))
        else:
            kept.append(field)
    if named:
        if schema is not None and schema != named[-1]:
            raise ConfigError(f"schema {schema!r} given, but the URL names {named[-1]!r}", field="schema")
        schema = named[-1]
        url = urlunsplit(parts._replace(query="&".join(kept)))
    return url, "outlay" if schema is None else schema


class Session:
    """The connections of one ledger (schema ``schema`` of the database at ``url``)."""

    def __init__(self, url: str, schema: str | None, connect_timeout: int) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"expected a postgresql:// URL, got {url!r}", field="url")
        url, schema = _split_schema(url, schema)
        if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(
                f"must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63), got {schema!r}",
                field="schema",
            )
        self.url = url
        self.schema = schema
        self.application_name = f"outlay-ledger:{schema}"
        shown = _masked(url)  # never print a password into logs
        self.name = f"PostgreSQL ledger {shown!r} schema {schema!r}"
        self._quoted = f'"{schema}"'  # safe: the name matched SCHEMA_NAME
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._partitions: set[str] = set()  # "YYYY-MM" months known to have a partition
        self.closed = False

    def sql(self, template: str) -> str:
        """``template`` with ``{s}`` replaced by the quoted schema name."""
        return template.replace("{s}", self._quoted)

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None and not connection.closed:
            return connection
        if connection is not None:  # broken and closed: not this thread's any more
            self._discard(connection)
        if self.closed:
            raise BackendError(f"{self.name} is closed")
        try:
            connection = psycopg.connect(
                self.url,
                autocommit=True,
                application_name=self.application_name,
                connect_timeout=self._connect_timeout,
            )
        except psycopg.ProgrammingError as exc:  # a malformed conninfo, not an unreachable server
            raise ConfigError(f"invalid PostgreSQL URL: {exc}", field="url") from exc
        except psycopg.Error as exc:
            raise BackendUnavailable(f"{self.name}: cannot connect: {exc}") from exc
        try:
            connection.execute(STAGING, prepare=False)  # this session's temp staging tables
        except psycopg.Error as exc:
            connection.close()
            raise BackendUnavailable(f"{self.name}: cannot set up a session: {exc}") from exc
        with self._lock:
            if self.closed:  # closed while this thread connected: close() will not see it
                connection.close()
                raise BackendError(f"{self.name} is closed")
            self._connections.append(connection)
        self._local.connection = connection
        # Closed when its thread ends: a program whose threads come and go (a pool that replaces
        # idle workers, a thread per request) otherwise kept one open connection per thread it
        # ever had, until PostgreSQL refused new ones ("too many clients").
        at_thread_end(self._local, self, Session._release, connection)
        return connection

    def _release(self, connection: Connection) -> None:
        """A thread that ended: its connection is closed and forgotten."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        with contextlib.suppress(Exception):  # closing at a thread's end must never raise there
            connection.close()

    def _discard(self, connection: Connection) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)``, retried on a fresh connection if it broke; psycopg errors translated.

        ``work`` must be one transaction (or a read): it is run again from the start on a retry.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            connection = self._connection()
            try:
                return work(connection)
            except psycopg.Error as exc:
                lost = connection.broken or connection.closed
                if lost:
                    self._discard(connection)
                if isinstance(exc, errors.CheckViolation) and "no partition" in str(exc):
                    with self._lock:  # a partition was dropped behind our back: create it again
                        self._partitions.clear()
                elif not (lost or isinstance(exc, errors.TransactionRollback)):
                    raise BackendError(f"{self.name}: {exc}") from exc
                if attempt == _ATTEMPTS:
                    kind = BackendUnavailable if lost else BackendError
                    raise kind(f"{self.name}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def migrate(self, connection: Connection) -> None:
        """Create the schema and apply pending migrations, in one transaction."""
        newest = MIGRATIONS[-1][0]
        with connection.transaction():
            # Workers starting together queue on this lock; the first applies, the rest find it done.
            connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_MIGRATIONS, self.schema)
            )
            connection.execute(self.sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            connection.execute(self.sql(_MIGRATIONS_TABLE))
            rows = connection.execute(self.sql("SELECT version FROM {s}.schema_migrations")).fetchall()
            applied = {row[0] for row in rows}
            if applied and max(applied) > newest:
                raise BackendError(
                    f"{self.name}: the database schema is at version {max(applied)}, newer than"
                    f" this outlay knows ({newest}); upgrade outlay"
                )
            for version, name, text in MIGRATIONS:
                if version not in applied:
                    connection.execute(self.sql(text), prepare=False)
                    connection.execute(
                        self.sql("INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)"),
                        (version, name),
                    )

    def ensure_partitions(self, connection: Connection, months: set[str]) -> None:
        """Make sure the ``YYYY-MM`` months have an events partition (own transaction)."""
        with self._lock:
            missing = sorted(months - self._partitions)
        if not missing:
            return
        # Not inside the write's transaction: creating a partition locks the parent table, which
        # must not stay locked for a whole batch. The advisory lock makes IF NOT EXISTS race-free
        # between processes creating the same month at once.
        with connection.transaction():
            connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_PARTITIONS, self.schema)
            )
            rows = connection.execute(_ATTACHED, (self.sql("{s}.events"),)).fetchall()
            attached = {row[0] for row in rows}
            for month in missing:
                first = date.fromisoformat(month + "-01")
                name = base = partition_ddl(first)[0]
                if base in attached or any(n.startswith(base + "_") for n in attached):
                    continue
                # A table of that name that is no partition was detached (to drop old detail): it
                # keeps its name and rows, and the month gets a new partition beside it, rather
                # than every write into that month failing forever (and the writer with them).
                suffix = 1
                while connection.execute(_EXISTS, (self.sql("{s}.") + name,)).fetchone() != (None,):
                    suffix += 1
                    name = f"{base}_{suffix}"
                connection.execute(self.sql(partition_ddl(first, name)[1]))
        with self._lock:
            self._partitions.update(missing)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
