"""Keep-alive connection pools to the upstreams (aiohttp), created once per event loop.

Only an allow-list of client headers is forwarded, and the upstream credential is set here — so the
client's virtual key can never reach the provider, whatever headers the client sends.

Why aiohttp: the upstream client is the gateway's hottest path. Measured on the benchmark's fake
upstream (16 requests in flight, one event loop), aiohttp's client spends ~90 µs of CPU per request
where httpx/httpx2 spend ~530 µs (docs/benchmarks-gateway.md); at 500 req/s on two cores that
difference is most of the latency budget.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Literal

import aiohttp

from ._config import Api, GatewayConfig, Upstream

__all__ = ["ANTHROPIC_VERSION", "UpstreamError", "UpstreamPool", "UpstreamResponse"]

ANTHROPIC_VERSION = "2023-06-01"
_FORWARD = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta", "idempotency-key")


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in full.

    ``never_sent``: the request never left (connect failure or timeout, no free connection in
    time), so the provider cannot have billed it. ``timeout``: it timed out. ``kind`` is the
    underlying exception's class name, for messages.
    """

    def __init__(self, kind: str, detail: str, *, never_sent: bool, timeout: bool) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.never_sent = never_sent
        self.timeout = timeout


def upstream_error(exc: BaseException) -> UpstreamError | None:
    """The :class:`UpstreamError` for a client-side failure, or ``None`` if ``exc`` is not one."""
    kind, detail = type(exc).__name__, str(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connect or pool wait: never sent
        return UpstreamError(kind, detail, never_sent=True, timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(kind, detail, never_sent=True, timeout=False)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(kind, detail, never_sent=False, timeout=True)
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(kind, detail, never_sent=False, timeout=False)
    return None


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


class UpstreamResponse:
    """An upstream answer whose body is read (or streamed) later; ``aclose`` it when done."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: dict[str, str] = {k.lower(): v for k, v in response.headers.items()}

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Exception as exc:
            error = upstream_error(exc)
            if error is None:
                raise  # not a transport failure: as it is
            raise error from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk (never buffered whole)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            error = upstream_error(exc)
            if error is None:
                raise  # not a transport failure: as it is
            raise error from exc

    async def aclose(self) -> None:
        # A body read in full returns the connection to the pool; one abandoned mid-way (client
        # gone, error) closes the connection, which must not be reused with unread bytes on it.
        self._response.release() if self._response.content.at_eof() else self._response.close()


class UpstreamPool:
    """Keep-alive connection pools, one per configured upstream, for the running event loop."""

    def __init__(self, config: GatewayConfig, *, trust_env: bool = True) -> None:
        self.config = config
        self._trust_env = trust_env
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._proxies: dict[str, str | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Create the sessions for the running loop (idempotent). Connections open lazily and are
        then kept alive; a pool made on another loop (a test's) is dropped, not shared."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._sessions, self._loop = {}, loop
        for name, upstream in self.config.upstreams.items():
            if name in self._sessions:
                continue
            # The proxy (HTTP(S)_PROXY / NO_PROXY) is resolved once here, not per request as
            # aiohttp's trust_env would (an environment scan and a netrc read on every call).
            self._proxies[name] = _env_proxy(upstream.base_url) if self._trust_env else None
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=upstream.max_connections, limit_per_host=0, keepalive_timeout=60.0
                ),
                # connect: a free pooled connection or a new one, in time; sock_read: between two
                # reads of the answer (a stream may last long, but must not stall).
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=upstream.timeout,
                    sock_connect=upstream.connect_timeout,
                    sock_read=upstream.timeout,
                ),
                trust_env=False,
                auto_decompress=True,
                raise_for_status=False,
            )

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _session(self, upstream: Upstream) -> aiohttp.ClientSession:
        if self._loop is not asyncio.get_running_loop() or upstream.name not in self._sessions:
            self.start()  # first use, or served without a lifespan (an in-process ASGI transport)
        return self._sessions[upstream.name]

    def headers(self, upstream: Upstream, client_headers: Mapping[str, str], *, body: bool) -> dict[str, str]:
        """The allow-listed client headers plus the upstream's own credential."""
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
        if body:
            headers["content-type"] = "application/json"
        return headers

    async def send(
        self,
        upstream: Upstream,
        api: Api | Literal["models", "count_tokens"],
        client_headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        model: str | None = None,
    ) -> UpstreamResponse:
        """Send the request; the answer's head is in, its body is read from the result.

        Raises :class:`UpstreamError` when the upstream cannot be reached or fails to answer.
        """
        session = self._session(upstream)
        headers = self.headers(upstream, client_headers, body=body is not None)
        try:
            response = await session.request(
                "GET" if body is None else "POST",
                upstream.url(api, model),
                headers=headers,
                data=body,
                allow_redirects=False,
                proxy=self._proxies.get(upstream.name),
            )
        except Exception as exc:
            error = upstream_error(exc)
            if error is None:
                raise  # not a transport failure: as it is
            raise error from exc
        return UpstreamResponse(response)
