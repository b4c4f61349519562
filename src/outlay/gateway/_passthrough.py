"""The free calls the gateway passes through: ``POST /v1/messages/count_tokens`` (Anthropic) and
``GET /v1/models/{id}`` (OpenAI and Anthropic formats).

Providers do not bill them (https://docs.anthropic.com/en/api/messages-count-tokens: "free to use"),
so, like ``GET /v1/models``, they are authenticated with the client's outlay key, sent with the
upstream's own credential, and neither admitted against a budget nor recorded as a cost event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from ._config import Upstream
from ._errors import Dialect, GatewayError, from_transport_error, from_upstream_response
from ._upstreams import UpstreamError, UpstreamPool

__all__ = ["MODEL_PREFIX", "count_tokens", "model_info"]

#: ``GET /v1/models/{id}``: everything after the prefix is the id (self-hosted ids hold '/').
MODEL_PREFIX: Final = "/v1/models/"
_PASS_HEADERS: Final = ("x-request-id", "request-id", "content-type")


async def _relay(
    pool: UpstreamPool,
    upstream: Upstream,
    api: Literal["models", "count_tokens"],
    headers: Mapping[str, str],
    body: bytes | None = None,
    model: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The upstream's answer and the headers passed on; its error as the client's GatewayError."""
    try:
        response = await pool.send(upstream, api, headers, body, model=model)
        try:
            content = await response.read()
        finally:
            await response.aclose()
    except UpstreamError as exc:
        raise from_transport_error(exc, upstream.name)[0] from None
    if response.status >= 300:  # an error, or a redirect (not followed)
        raise from_upstream_response(
            response.status, content, response.headers, upstream.name, upstream.api_key
        )
    passed: dict[str, str] = {k: response.headers[k] for k in _PASS_HEADERS if k in response.headers}
    passed.setdefault("content-type", "application/json")
    return content, passed


def _no_route(model: str) -> GatewayError:
    return GatewayError(
        404, f"model {model!r} has no route: add a route or an alias for it", code="model_not_found"
    )


async def count_tokens(
    pool: UpstreamPool, headers: Mapping[str, str], request: dict[str, Any], body: bytes
) -> tuple[bytes, dict[str, str]]:
    """Anthropic's token count for a Messages request, from the upstream serving its model."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "model: required, a non-empty string", param="model")
    resolved = pool.config.resolve(model)
    if resolved is None:
        raise _no_route(model)
    upstream, upstream_model = resolved
    if upstream.kind != "anthropic":
        raise GatewayError(
            400,
            f"model {model!r} is served by upstream {upstream.name!r} ({upstream.kind}), which has no"
            " /v1/messages/count_tokens (an Anthropic API)",
            param="model",
        )
    if upstream_model != model:  # an alias or an upstream/model name: the upstream's own name
        body = json.dumps({**request, "model": upstream_model}).encode()
    return await _relay(pool, upstream, "count_tokens", headers, body)


def _checked_id(model: str) -> str:
    """``model`` as the last part of an upstream URL. The server has decoded ``%2F``, so an id may
    hold '/' (self-hosted ids do), but a '..' or '.' segment would walk out of ``<base>/models/``: a
    GET with the upstream's credential to any path of the provider's API (every tenant's files,
    stored completions, batches), its answer passed back to the client."""
    if any(segment in (".", "..") for segment in model.split("/")):
        shown = model if len(model) <= 200 else model[:197] + "..."
        raise GatewayError(
            400, f"model {shown!r}: path segments '..' and '.' are not model ids", param="model"
        )
    return model


def _alias(model: str) -> bytes:
    # As GET /v1/models lists it: the alias is the gateway's, not any upstream's.
    return json.dumps({"id": model, "object": "model", "created": 0, "owned_by": "outlay-alias"}).encode()


async def model_info(
    pool: UpstreamPool, headers: Mapping[str, str], dialect: Dialect, model: str
) -> tuple[bytes, dict[str, str]]:
    """One model, from the upstream that serves it, in the format of the client's list: an
    Anthropic client sees Anthropic's models, any other client the OpenAI-format ones."""
    config = pool.config
    anthropic = dialect == "anthropic"
    _checked_id(model)
    if not anthropic and model in config.aliases:
        return _alias(model), {"content-type": "application/json"}
    resolved = config.resolve(model)
    if resolved is None or (resolved[0].kind == "anthropic") != anthropic:
        raise _no_route(model)  # (a model of the other format is not in this client's list either)
    upstream, upstream_model = resolved
    return await _relay(pool, upstream, "models", headers, model=_checked_id(upstream_model))
