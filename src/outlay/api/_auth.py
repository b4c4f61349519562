"""API credentials: admin tokens and tenant-scoped tokens, kept only as SHA-256 hashes.

A tokens file (TOML or JSON) lists them::

    [[tokens]]
    name = "finance"
    sha256 = "9f86d081884c7d65..."     # hash_token("the secret"); `token = "..."` also works
    role = "admin"

    [[tokens]]
    name = "acme-app"
    sha256 = "..."
    tenant = "acme"                      # role "tenant" is implied by a tenant

Tokens are long random secrets, so one SHA-256 is enough (like GitHub's tokens): a leaked file does
not reveal them, and a lookup by hash leaks nothing an attacker could use to guess one.

Tokens read from a file follow it: a change to the file (a token removed, i.e. revoked, or added)
takes effect within a second, without a restart. A file that no longer reads (a half-written edit,
a syntax error, deleted) leaves the tokens as they were, and is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from outlay._errors import ConfigError, Forbidden, Unauthenticated

__all__ = ["ApiTokens", "Principal", "hash_token", "load_tokens", "new_token"]

ENV_VAR: Final = "OUTLAY_API_TOKENS"
_ROLES: Final = ("admin", "tenant")
#: Seconds between looks at a tokens file for changes (one stat each).
_RECHECK: Final = 1.0

logger = logging.getLogger("outlay.api")


def hash_token(token: str) -> str:
    """The hex SHA-256 of ``token``: what a tokens file stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (``ol_`` + 43 URL-safe characters, 256 bits)."""
    return "ol_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an admin (``tenant is None``) or one tenant."""

    name: str
    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def scope_tenant(self, requested: str | None) -> str | None:
        """The tenant a query must be restricted to: a tenant token may only name its own."""
        if self.tenant is None:
            return requested
        if requested is not None and requested != self.tenant:
            raise Forbidden(f"this token may only read tenant {self.tenant!r}", reason="other_tenant")
        return self.tenant

    def require_admin(self, what: str) -> None:
        if self.tenant is not None:
            raise Forbidden(f"{what} needs an admin token", reason="admin_only")


class ApiTokens:
    """The configured credentials, by hash."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        if not principals:
            raise ConfigError("no API tokens are configured", field="tokens")
        self._by_hash = dict(principals)
        self._file: Path | None = None  # the tokens file this follows, if any
        self._stamp: tuple[int, int, int] | None = None
        self._next_look = 0.0
        self._lock = threading.Lock()

    def _follow(self, path: Path, stamp: tuple[int, int, int]) -> ApiTokens:
        self._file, self._stamp = path, stamp
        self._next_look = time.monotonic() + _RECHECK
        return self

    def _refresh(self) -> None:
        """Read the tokens file again if it changed since it was read (at most once per _RECHECK)."""
        path = self._file
        if path is None or time.monotonic() < self._next_look or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_look = time.monotonic() + _RECHECK
            try:
                stamp = _stamp(path)
            except OSError as exc:
                if self._stamp is not None:
                    logger.error("tokens file %r: %s; the tokens read before stay in use", str(path), exc)
                    self._stamp = None  # said once; said again if it reappears broken
                return
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                fresh = _read(path)
            except ConfigError as exc:
                logger.error("%s; the tokens read before stay in use", exc)
                return
            self._by_hash = fresh._by_hash
            logger.info("tokens file %r read again: %d token(s)", str(path), len(fresh))
        finally:
            self._lock.release()

    def __len__(self) -> int:
        return len(self._by_hash)

    @classmethod
    def from_entries(cls, entries: Sequence[Mapping[str, Any]]) -> ApiTokens:
        principals: dict[str, Principal] = {}
        for index, entry in enumerate(entries):
            where = f"tokens[{index}]"
            if not isinstance(entry, Mapping):
                raise ConfigError("must be a table/object", field=where)
            unknown = sorted(set(entry) - {"name", "sha256", "token", "role", "tenant"})
            if unknown:
                raise ConfigError(f"unknown key(s): {', '.join(unknown)}", field=where)
            name = entry.get("name", f"token-{index}")
            digest = _digest(entry, where)
            tenant = entry.get("tenant")
            role = entry.get("role", "tenant" if tenant is not None else None)
            if role not in _ROLES:
                raise ConfigError(f"must be 'admin' or 'tenant', got {role!r}", field=f"{where}.role")
            if role == "tenant" and (not isinstance(tenant, str) or not tenant):
                raise ConfigError("a tenant token needs a non-empty tenant", field=f"{where}.tenant")
            if role == "admin" and tenant is not None:
                raise ConfigError("an admin token has no tenant", field=f"{where}.tenant")
            if digest in principals:
                raise ConfigError("the same token is listed twice", field=where)
            principals[digest] = Principal(str(name), tenant if role == "tenant" else None)
        return cls(principals)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header value."""
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token> header", reason="missing")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("expected Authorization: Bearer <token>", reason="malformed")
        self._refresh()
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            raise Unauthenticated("unknown token", reason="invalid")
        return principal


def _digest(entry: Mapping[str, Any], where: str) -> str:
    digest, plain = entry.get("sha256"), entry.get("token")
    if (digest is None) == (plain is None):
        raise ConfigError("give exactly one of sha256 or token", field=where)
    if plain is not None:
        if not isinstance(plain, str) or len(plain) < 16:
            raise ConfigError("a token must be a string of at least 16 characters", field=f"{where}.token")
        return hash_token(plain)
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError("must be 64 lowercase hex characters (hash_token)", field=f"{where}.sha256")
    return digest


def _is_json(text: str) -> bool:
    # A JSON object or array of objects; TOML starts with a key or a [table] header instead.
    return re.match(r"\s*(\{|\[\s*[{\]])", text) is not None


def _parse(text: str, origin: str) -> ApiTokens:
    try:
        data: Any = json.loads(text) if _is_json(text) else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {origin}: {exc}", field="tokens") from None
    entries = data.get("tokens") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ConfigError(f"{origin} must hold a list of tokens (a `tokens` array)", field="tokens")
    return ApiTokens.from_entries(entries)


def load_tokens(source: str | os.PathLike[str] | None = None) -> ApiTokens:
    """Tokens from a TOML/JSON file, inline JSON, or (``source=None``) ``$OUTLAY_API_TOKENS``,
    which may itself be a path or inline JSON."""
    if source is None:
        source = os.environ.get(ENV_VAR)
        if not source:
            raise ConfigError(f"no API tokens: pass --tokens FILE or set {ENV_VAR}", field="tokens")
    text = str(source)
    if isinstance(source, str) and _is_json(text):
        return _parse(text, "inline tokens")
    path = Path(text).expanduser()
    try:
        stamp = _stamp(path)
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {str(path)!r}: {exc.strerror}", field="tokens") from None
    return _read(path)._follow(path, stamp)


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a changed file: its inode (a file replaced by rename), size and mtime."""
    status = path.stat()
    return status.st_ino, status.st_size, status.st_mtime_ns


def _read(path: Path) -> ApiTokens:
    try:
        content = path.read_bytes().decode("utf-8")  # not the locale's codec: the file is UTF-8 TOML/JSON
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {str(path)!r}: {exc.strerror}", field="tokens") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"tokens file {str(path)!r} is not UTF-8 ({exc.reason})", field="tokens") from None
    return _parse(content, f"tokens file {str(path)!r}")
