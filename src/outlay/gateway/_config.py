"""Gateway configuration: upstreams, model routes and aliases.

A model name resolves to ``(upstream, upstream model)`` in this order:

1. an **alias** (``"fast" -> "gpt-4o-mini"`` or ``"fast" -> "anthropic/claude-haiku-4-5"``), one level;
2. an explicit **upstream prefix** ``<upstream name>/<model>`` (only for configured upstream names, so
   self-hosted names like ``meta-llama/Llama-3-8B`` are left alone);
3. the first **route** whose glob matches (``gpt-*`` -> openai, ``claude-*`` -> anthropic, ...).

Base URLs follow each provider SDK's ``base_url`` convention: OpenAI-style bases include the version
(``https://api.openai.com/v1``, Gemini's ``.../v1beta/openai``) and the gateway appends
``/chat/completions``; the Anthropic base does not (``https://api.anthropic.com``) and the gateway
appends ``/v1/messages``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import quote

from outlay._errors import ConfigError

__all__ = [
    "DEFAULT_FREE_REQUESTS_PER_MINUTE",
    "DEFAULT_ROUTES",
    "MAX_CALL_SECONDS",
    "Api",
    "GatewayConfig",
    "Kind",
    "Route",
    "Upstream",
]

#: The default longest call (an hour: long reasoning streams, never a runaway one).
MAX_CALL_SECONDS: Final = 3600.0
DEFAULT_FREE_REQUESTS_PER_MINUTE: Final = 600

Kind = Literal["openai", "anthropic", "gemini", "openai_compatible"]
Api = Literal["chat", "responses", "embeddings", "messages"]

_KINDS: frozenset[str] = frozenset({"openai", "anthropic", "gemini", "openai_compatible"})
# Which client-facing APIs each kind of upstream serves natively (no format translation).
SERVES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "openai": frozenset({"chat", "responses", "embeddings"}),
        "openai_compatible": frozenset({"chat", "responses", "embeddings"}),
        "gemini": frozenset({"chat", "embeddings"}),
        "anthropic": frozenset({"messages"}),
    }
)
_DEFAULT_BASE = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
}
_ENV_BASE = {
    "openai": "OUTLAY_UPSTREAM_OPENAI",
    "anthropic": "OUTLAY_UPSTREAM_ANTHROPIC",
    "gemini": "OUTLAY_UPSTREAM_GEMINI",
}
_ENV_KEY = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider endpoint the gateway forwards to, with its own connection pool."""

    name: str
    kind: Kind
    base_url: str
    api_key: str | None = field(default=None, repr=False)  # never printed, never sent to clients
    timeout: float = 600.0  # seconds to wait for the next byte (long generations stream slowly)
    connect_timeout: float = 10.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"upstream name must be non-empty without '/', got {self.name!r}", field="name")
        if self.kind not in _KINDS:
            raise ConfigError(f"must be one of {sorted(_KINDS)}, got {self.kind!r}", field="kind")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {self.base_url!r}", field="base_url")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        for name in ("timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)!r}", field=name)
        if self.max_connections < 1:
            raise ConfigError(f"must be at least 1, got {self.max_connections}", field="max_connections")

    def url(self, api: Api | Literal["models", "count_tokens"], model: str | None = None) -> str:
        """The upstream URL of ``api``; with ``model``, of that one model (``GET /models/{id}``)."""
        if self.kind == "anthropic":
            if api == "count_tokens":
                return self.base_url + "/v1/messages/count_tokens"
            url = self.base_url + "/v1/" + ("messages" if api == "messages" else "models")
        else:
            path = {"chat": "/chat/completions", "responses": "/responses", "embeddings": "/embeddings"}
            url = self.base_url + path.get(api, "/models")
        # Fine-tuned ids hold ':' (ft:gpt-4o-mini:org::id), self-hosted ones '/' (meta-llama/...):
        # sent as the client's SDK sends them; anything else is escaped.
        return url if model is None else url + "/" + quote(model, safe="/:@")


@dataclass(frozen=True, slots=True)
class Route:
    """Models matching the glob ``pattern`` (``fnmatch``, case-sensitive) go to ``upstream``."""

    pattern: str
    upstream: str


DEFAULT_ROUTES: tuple[Route, ...] = (
    *(Route(p, "openai") for p in ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-embedding-3-*")),
    *(Route(p, "openai") for p in ("text-embedding-ada-*", "omni-moderation-*", "computer-use-*")),
    Route("claude-*", "anthropic"),
    *(Route(p, "gemini") for p in ("gemini-*", "gemma-*", "text-embedding-004", "embedding-*")),
)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds, got {value!r}", field=name)
    return float(value)


def _whole(value: object, name: str) -> int:
    """A whole number from a config file: 2048.9 or "big" is an error, never truncated."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be a whole number, got {value!r}", field=name)
    return value


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to route a request. Build with :meth:`from_env` or :meth:`from_dict`."""

    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_body_bytes: int = 10 * 1024 * 1024
    #: The longest a call may last, stream included; its budget hold lives this long (and a minute),
    #: so a hold never expires under a call still running (which would let calls overshoot a limit).
    max_call_seconds: float = MAX_CALL_SECONDS
    #: Requests a minute each key may make on the free routes (model lists and lookups, token
    #: counts), in bursts of up to a sixth of it, per gateway process; past it, a 429.
    free_requests_per_minute: int = DEFAULT_FREE_REQUESTS_PER_MINUTE

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstreams", MappingProxyType(dict(self.upstreams)))
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))
        object.__setattr__(self, "routes", tuple(self.routes))
        for name, upstream in self.upstreams.items():
            if name != upstream.name:
                raise ConfigError(f"key {name!r} names upstream {upstream.name!r}", field="upstreams")
        for route in self.routes:
            if route.upstream not in self.upstreams:
                raise ConfigError(
                    f"route {route.pattern!r} points at unknown upstream {route.upstream!r}", field="routes"
                )
        if self.max_body_bytes < 1024:
            raise ConfigError(f"must be at least 1024, got {self.max_body_bytes}", field="max_body_bytes")
        if not 1 <= self.max_call_seconds <= 86400:  # (also refuses NaN)
            raise ConfigError(
                f"must be from 1 to 86400 seconds, got {self.max_call_seconds}", field="max_call_seconds"
            )
        free = self.free_requests_per_minute
        if isinstance(free, bool) or not isinstance(free, int) or not 1 <= free <= 1_000_000:
            raise ConfigError(
                f"must be a whole number from 1 to 1000000, got {free!r}", field="free_requests_per_minute"
            )

    def resolve(self, model: str) -> tuple[Upstream, str] | None:
        """``(upstream, model to send upstream)`` for a client's model name, or ``None`` if no route."""
        model = self.aliases.get(model, model)
        prefix, sep, rest = model.partition("/")
        if sep and rest and prefix in self.upstreams:
            return self.upstreams[prefix], rest
        for route in self.routes:
            if fnmatch.fnmatchcase(model, route.pattern):
                return self.upstreams[route.upstream], model
        return None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        extra_upstreams: Iterable[Upstream] = (),
        routes: Iterable[Route] | None = None,
        aliases: Mapping[str, str] | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
        max_call_seconds: float = MAX_CALL_SECONDS,
        free_requests_per_minute: int = DEFAULT_FREE_REQUESTS_PER_MINUTE,
    ) -> GatewayConfig:
        """OpenAI, Anthropic and Gemini upstreams from ``OUTLAY_UPSTREAM_*`` and ``*_API_KEY``.

        ``routes`` are tried before :data:`DEFAULT_ROUTES`; ``extra_upstreams`` adds e.g. a
        self-hosted ``openai_compatible`` server.
        """
        env = os.environ if environ is None else environ
        upstreams = {
            kind: Upstream(
                kind,
                kind,
                env.get(_ENV_BASE[kind]) or _DEFAULT_BASE[kind],
                env.get(_ENV_KEY[kind]) or None,
            )
            for kind in ("openai", "anthropic", "gemini")
        }
        for upstream in extra_upstreams:
            upstreams[upstream.name] = upstream
        return cls(
            upstreams,
            routes=(*(routes or ()), *DEFAULT_ROUTES),
            aliases=aliases or {},
            max_body_bytes=max_body_bytes,
            max_call_seconds=max_call_seconds,
            free_requests_per_minute=free_requests_per_minute,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """From a parsed config file::

        {"upstreams": {"local": {"kind": "openai_compatible", "base_url": "http://vllm:8000/v1",
                                 "api_key_env": "LOCAL_KEY"}},
         "routes": [{"pattern": "llama-*", "upstream": "local"}],
         "aliases": {"fast": "gpt-4o-mini"}, "max_body_bytes": 10485760}
        """
        env = os.environ if environ is None else environ
        if not isinstance(data, Mapping):
            raise ConfigError("gateway config must be a table/object", field="gateway")
        extra: list[Upstream] = []
        raw_upstreams = data.get("upstreams") or {}
        if not isinstance(raw_upstreams, Mapping):
            raise ConfigError("must be a table of name -> upstream", field="upstreams")
        for name, spec in raw_upstreams.items():
            if not isinstance(spec, Mapping):
                raise ConfigError("must be a table", field=f"upstreams.{name}")
            known = {"kind", "base_url", "api_key_env", "timeout", "connect_timeout", "max_connections"}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise ConfigError(f"unknown key(s) {unknown}", field=f"upstreams.{name}")
            key_env = spec.get("api_key_env")
            try:
                extra.append(
                    Upstream(
                        str(name),
                        spec.get("kind", "openai_compatible"),
                        str(spec.get("base_url", "")),
                        env.get(str(key_env)) if key_env else None,
                        timeout=_seconds(spec.get("timeout", 600.0), f"upstreams.{name}.timeout"),
                        connect_timeout=_seconds(
                            spec.get("connect_timeout", 10.0), f"upstreams.{name}.connect_timeout"
                        ),
                        max_connections=_whole(
                            spec.get("max_connections", 1000), f"upstreams.{name}.max_connections"
                        ),
                    )
                )
            except (TypeError, ValueError) as exc:  # ConfigError included: re-raised naming the upstream
                raise ConfigError(str(exc), field=f"upstreams.{name}") from None
        routes = []
        for i, spec in enumerate(data.get("routes") or []):
            if not isinstance(spec, Mapping) or not {"pattern", "upstream"} <= set(spec):
                raise ConfigError("needs 'pattern' and 'upstream'", field=f"routes[{i}]")
            if not all(isinstance(spec[k], str) and spec[k] for k in ("pattern", "upstream")):
                raise ConfigError("'pattern' and 'upstream' must be non-empty strings", field=f"routes[{i}]")
            routes.append(Route(spec["pattern"], spec["upstream"]))
        aliases = data.get("aliases") or {}
        if not isinstance(aliases, Mapping) or not all(isinstance(v, str) for v in aliases.values()):
            raise ConfigError("must map alias -> model name", field="aliases")
        free = data.get("free_requests_per_minute", DEFAULT_FREE_REQUESTS_PER_MINUTE)
        return cls.from_env(
            env,
            extra_upstreams=extra,
            routes=routes,
            aliases=dict(aliases),
            max_body_bytes=_whole(data.get("max_body_bytes", 10 * 1024 * 1024), "max_body_bytes"),
            max_call_seconds=_seconds(data.get("max_call_seconds", MAX_CALL_SECONDS), "max_call_seconds"),
            free_requests_per_minute=_whole(free, "free_requests_per_minute"),
        )
