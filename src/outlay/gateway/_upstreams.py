"""One shared ``httpx.AsyncClient`` per upstream, created once at startup; requests built per call.

Only an allow-list of client headers is forwarded, and the upstream credential is set here — so the
client's virtual key can never reach the provider, whatever headers the client sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import httpx2 as httpx

from ._config import Api, GatewayConfig, Upstream

__all__ = ["ANTHROPIC_VERSION", "UpstreamPool"]

ANTHROPIC_VERSION = "2023-06-01"
_FORWARD = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta", "idempotency-key")

TransportFactory = Callable[[Upstream], httpx.AsyncBaseTransport]


class UpstreamPool:
    """Keep-alive connection pools, one per configured upstream."""

    def __init__(
        self, config: GatewayConfig, *, transport: TransportFactory | None = None, trust_env: bool = True
    ) -> None:
        self.config = config
        self._transport = transport
        self._trust_env = trust_env
        self._clients: dict[str, httpx.AsyncClient] = {}

    @property
    def started(self) -> bool:
        return bool(self._clients)

    def start(self) -> None:
        """Create the clients (idempotent). Cheap: connections open lazily and are then kept alive."""
        for name, upstream in self.config.upstreams.items():
            if name in self._clients:
                continue
            self._clients[name] = httpx.AsyncClient(
                transport=self._transport(upstream) if self._transport else None,
                limits=httpx.Limits(
                    max_connections=upstream.max_connections,
                    max_keepalive_connections=upstream.max_connections,
                    keepalive_expiry=60.0,
                ),
                timeout=httpx.Timeout(upstream.timeout, connect=upstream.connect_timeout),
                trust_env=self._trust_env,
                follow_redirects=False,
            )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def client(self, upstream: Upstream) -> httpx.AsyncClient:
        if not self._clients:
            self.start()  # served without a lifespan (e.g. an in-process ASGI transport)
        return self._clients[upstream.name]

    def request(
        self,
        upstream: Upstream,
        api: Api | Literal["models"],
        client_headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> httpx.Request:
        headers = {name: client_headers[name] for name in _FORWARD if name in client_headers}
        headers["user-agent"] = "outlay-gateway"
        if upstream.kind == "anthropic":
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
            if upstream.api_key:
                headers["x-api-key"] = upstream.api_key
        else:
            headers.pop("anthropic-version", None)
            headers.pop("anthropic-beta", None)
            if upstream.api_key:
                headers["authorization"] = f"Bearer {upstream.api_key}"
        method = "GET" if body is None else "POST"
        if body is not None:
            headers["content-type"] = "application/json"
        return self.client(upstream).build_request(
            method,
            upstream.url(api),
            headers=headers,
            content=body,
        )
