"""``GET /v1/models``: the union of what the upstreams serve, plus the configured aliases.

An OpenAI-style client (no ``anthropic-version`` header) gets the OpenAI list of every
OpenAI-format upstream; an Anthropic client gets Anthropic's page format. An upstream that fails is
left out; only if every one fails does the client get that error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from ._config import Upstream
from ._errors import Dialect, GatewayError, from_transport_error, from_upstream_response
from ._upstreams import UpstreamError, UpstreamPool

__all__ = ["model_page"]


async def _list(
    pool: UpstreamPool, upstream: Upstream, headers: Mapping[str, str]
) -> list[Any] | GatewayError:
    try:
        response = await pool.send(upstream, "models", headers)
        try:
            content = await response.read()
        finally:
            await response.aclose()
    except UpstreamError as exc:
        return from_transport_error(exc, upstream.name)[0]
    if response.status >= 400:
        return from_upstream_response(
            response.status, content, response.headers, upstream.name, upstream.api_key
        )
    try:
        data = json.loads(content).get("data")
    except (ValueError, AttributeError):
        return GatewayError(502, f"upstream {upstream.name} sent an unreadable model list")
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


async def model_page(pool: UpstreamPool, headers: Mapping[str, str], dialect: Dialect) -> bytes:
    anthropic = dialect == "anthropic"
    wanted = [u for u in pool.config.upstreams.values() if (u.kind == "anthropic") == anthropic]
    results = await asyncio.gather(*(_list(pool, u, headers) for u in wanted))
    data = [model for result in results if not isinstance(result, GatewayError) for model in result]
    errors = [result for result in results if isinstance(result, GatewayError)]
    if errors and not data:
        raise errors[0]
    if anthropic:
        first, last = (data[0].get("id"), data[-1].get("id")) if data else (None, None)
        return json.dumps({"data": data, "has_more": False, "first_id": first, "last_id": last}).encode()
    aliases = [
        {"id": a, "object": "model", "created": 0, "owned_by": "outlay-alias"} for a in pool.config.aliases
    ]
    return json.dumps({"object": "list", "data": data + aliases}).encode()
