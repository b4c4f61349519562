"""Telling a mistyped URL from a file path, for every setting that takes either."""

from __future__ import annotations

import re
from typing import Final

from ._errors import ConfigError

__all__ = ["refuse_url_like_path"]

# ``postgresql:/db``, ``redis:host:6379``, ``nats:/host``: a scheme (two characters or more, so a
# Windows drive ``C:`` stays a path) and a colon without the ``//`` of a URL; or a known scheme
# whose colon was lost (``postgresql//host/db``).
_SCHEME_COLON: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_SCHEME_NO_COLON: Final = re.compile(r"(?i)(postgres|postgresql|redis|rediss|nats|tls|memory|sqlite)//")


def refuse_url_like_path(target: str, *, field: str, expected: str) -> None:
    """Refuse a "path" that is a URL mistyped. Taken as a path it would open (and create) a local
    SQLite file named after the URL, and the setting would silently fall back to an embedded store:
    a worker writing a shared stream's events into a file nobody reports from, a gateway holding
    budgets only its own host sees."""
    if _SCHEME_COLON.match(target) or _SCHEME_NO_COLON.match(target):
        raise ConfigError(
            f"{target!r} is neither a URL (scheme://...) nor a plain path: expected {expected}"
            f" (a file whose name holds ':' is written ./{target})",
            field=field,
        )
