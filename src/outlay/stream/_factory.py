"""``open_event_log(url)``: pick an event log implementation from a URL in configuration."""

from __future__ import annotations

import os

from outlay._errors import ConfigError
from outlay._urls import refuse_url_like_path

from ._base import EventLog
from ._memory import InMemoryEventLog
from ._sqlite import SQLiteEventLog

__all__ = ["open_event_log"]

_SQLITE = "sqlite://"
_EXPECTED = "nats://, memory://, sqlite:// or a file path"


def open_event_log(url: str | os.PathLike[str]) -> EventLog:
    """The event log named by ``url``.

    - ``memory://`` -> :class:`InMemoryEventLog` (a new, empty log each call)
    - ``sqlite:///abs/path.db`` (absolute) or ``sqlite://relative.db`` -> :class:`SQLiteEventLog`
    - a plain file path (no ``scheme://``) -> :class:`SQLiteEventLog`
    - ``nats://host:4222[?stream=...&spool=/path/spool.db]`` -> :class:`NatsEventLog` (docs/nats.md)

    Anything else raises :class:`~outlay.ConfigError` naming the ``url`` field.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"expected an event log URL or file path, got {url!r}", field="url")
    if "://" not in url:
        refuse_url_like_path(url, field="url", expected=_EXPECTED)
        return SQLiteEventLog(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        if url.lower() != "memory://":
            raise ConfigError(f"memory:// takes no path or options, got {url!r}", field="url")
        return InMemoryEventLog()
    if scheme == "sqlite":
        path = url[len(_SQLITE) :]
        if not path or path in {"/", ":memory:", "/:memory:"} or "?" in path:
            raise ConfigError(
                f"expected sqlite:///absolute/path.db or sqlite://relative.db, got {url!r}"
                " (for a memory log use memory://)",
                field="url",
            )
        return SQLiteEventLog(path)
    if scheme in {"nats", "tls"}:
        try:
            from ._nats import NatsEventLog
        except ImportError as exc:
            raise ConfigError(
                f"{scheme}:// (NATS JetStream) needs the nats extra: pip install 'outlay[nats]' ({exc})",
                field="url",
            ) from None
        return NatsEventLog.from_url(url)
    raise ConfigError(
        f"unknown event log scheme {scheme!r} in {url!r}; expected {_EXPECTED}",
        field="url",
    )
