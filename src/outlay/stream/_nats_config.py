"""Settings of a :class:`~outlay.stream.NatsEventLog`: checked once, then turned into nats-py calls."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import nats
from nats.aio.client import Client
from nats.js import api

from outlay._errors import ConfigError

__all__ = ["NatsSettings", "url_options"]

_logger = logging.getLogger("outlay.stream")

# JetStream stream names become directory names: no whitespace, '.', '*', '>' or path separators.
_STREAM_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUBJECT_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]+")
_SCHEMES: Final = frozenset({"nats", "tls", "ws", "wss"})


_URL_OPTIONS: Final = {
    "stream": str,
    "subject_prefix": str,
    "spool": str,
    "ack_wait": float,
    "duplicate_window": float,
    "timeout": float,
}


def url_options(url: str) -> tuple[str, dict[str, str | float]]:
    """Split ``nats://host:4222?stream=S&spool=/path`` into the server URL and keyword arguments."""
    base, _, query = url.partition("?")
    options: dict[str, str | float] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        kind = _URL_OPTIONS.get(key)
        if kind is None:
            expected = ", ".join(sorted(_URL_OPTIONS))
            raise ConfigError(f"unknown option {key!r} in {url!r}; expected {expected}", field="url")
        try:
            options["spool_path" if key == "spool" else key] = kind(value)
        except ValueError:
            raise ConfigError(f"option {key!r} must be a number, got {value!r}", field="url") from None
    return base, options


def _seconds(value: float, field: str, *, low: float = 0.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= low
    ):
        raise ConfigError(f"expected a finite number of seconds > {low:g}, got {value!r}", field=field)
    return float(value)


def _count(value: int, field: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"expected an integer >= {low}, got {value!r}", field=field)
    return value


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...]
    stream: str
    subject_prefix: str
    duplicate_window: float
    ack_wait: float
    max_ack_pending: int
    replicas: int
    timeout: float
    drain_timeout: float

    @classmethod
    def check(
        cls,
        url: str,
        *,
        stream: str,
        subject_prefix: str,
        duplicate_window: float,
        ack_wait: float,
        max_ack_pending: int,
        replicas: int,
        timeout: float,
        drain_timeout: float,
    ) -> NatsSettings:
        """Validated settings; anything wrong raises ConfigError naming the argument."""
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(
                f"expected nats://host:port (comma-separated for a cluster), got {url!r}", field="url"
            )
        servers = tuple(part.strip() for part in url.split(","))
        for server in servers:
            try:
                parts = urlsplit(server)
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as exc:
                raise ConfigError(f"invalid server URL {server!r}: {exc}", field="url") from None
            if parts.scheme not in _SCHEMES or not parts.hostname:
                raise ConfigError(f"expected nats://host:port, got {server!r}", field="url")
            if parts.query or parts.path.strip("/"):
                # ?stream=... here was ignored: the log used OUTLAY_EVENTS, another stream than asked
                raise ConfigError(
                    f"options in the URL ({server!r}) are read by open_event_log(url) or"
                    " NatsEventLog.from_url(url); NatsEventLog() takes them as arguments",
                    field="url",
                )
        if not isinstance(stream, str) or not _STREAM_NAME.fullmatch(stream):
            raise ConfigError(
                f"expected letters, digits, '-' or '_' (at most 64), got {stream!r}", field="stream"
            )
        if not isinstance(subject_prefix, str) or not all(
            _SUBJECT_TOKEN.fullmatch(part) for part in subject_prefix.split(".")
        ):
            raise ConfigError(
                f"expected dot-separated tokens of letters, digits, '-' or '_', got {subject_prefix!r}",
                field="subject_prefix",
            )
        return cls(
            servers=servers,
            stream=stream,
            subject_prefix=subject_prefix,
            duplicate_window=_seconds(duplicate_window, "duplicate_window"),
            ack_wait=_seconds(ack_wait, "ack_wait"),
            max_ack_pending=_count(max_ack_pending, "max_ack_pending", low=1),
            replicas=_count(replicas, "replicas", low=1),
            timeout=_seconds(timeout, "timeout"),
            drain_timeout=_seconds(drain_timeout, "drain_timeout", low=-1.0),
        )

    @property
    def where(self) -> str:
        """The servers for messages, without credentials."""
        out = []
        for server in self.servers:
            parts = urlsplit(server)
            out.append(f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}")
        return ",".join(out)

    async def connect(self, on_reconnect: Callable[[], Awaitable[None]]) -> Client:
        async def on_error(exc: Exception) -> None:
            # nats-py reports every failed reconnect attempt here; the log says it once, elsewhere.
            _logger.debug("NATS client: %s: %s", type(exc).__name__, exc)

        return await nats.connect(
            list(self.servers),
            connect_timeout=max(1, int(self.timeout)),
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # forever: the spool covers the outage
            reconnect_time_wait=0.5,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            name="outlay-event-log",
            skip_subject_validation=True,  # every subject is built from checked tokens
        )

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,  # records go only through truncate()
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas,
        )

    def consumer_config(self, durable: str) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=api.DeliverPolicy.ALL,
            # Explicit, not AckPolicy.ALL: processes sharing a consumer must not ack each other's messages.
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # redeliver until acknowledged: nothing is ever dropped
            max_ack_pending=self.max_ack_pending,
        )
