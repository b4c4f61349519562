"""Error responses in the client's own provider format, and translation of everything that can fail.

A client speaking OpenAI gets ``{"error": {"message", "type", "param", "code"}}``; a client speaking
Anthropic gets ``{"type": "error", "error": {"type", "message"}}`` — whatever went wrong and wherever
(our validation, our budgets, or the upstream), so the official SDKs raise their usual typed errors.
References: https://platform.openai.com/docs/guides/error-codes and
https://docs.anthropic.com/en/api/errors (which documents 402 ``billing_error``, 504 ``timeout_error``
and 529 ``overloaded_error``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from outlay._errors import (
    BackendError,
    BudgetExceeded,
    Forbidden,
    InvalidInput,
    NotEntitled,
    OutlayError,
    RunStopped,
    Throttled,
    Unauthenticated,
)
from outlay._money import MONEY_CONTEXT, ZERO, money_str
from outlay._usage import Usage

from ._upstreams import UpstreamError

__all__ = [
    "Dialect",
    "GatewayError",
    "from_outlay_error",
    "from_transport_error",
    "from_upstream_response",
    "render",
]

_log = logging.getLogger("outlay.gateway")

Dialect = Literal["openai", "anthropic"]

# status -> (OpenAI error type, Anthropic error type)
_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "authentication_error"),
    402: ("insufficient_quota", "billing_error"),
    403: ("permission_error", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    502: ("server_error", "api_error"),
    503: ("server_error", "overloaded_error"),
    504: ("server_error", "timeout_error"),
    529: ("server_error", "overloaded_error"),
}


class GatewayError(Exception):
    """An error answer the gateway sends; rendered per client dialect by :func:`render`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        kind: tuple[Dialect, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.details = dict(details or {})
        self.kind = kind  # an upstream's own error type, and the format it is a type of

    def status_for(self, dialect: Dialect) -> int:
        # 529 is Anthropic's own; OpenAI clients understand 503 for the same condition.
        return 503 if self.status == 529 and dialect == "openai" else self.status


def render(error: GatewayError, dialect: Dialect) -> bytes:
    """The JSON body of ``error`` in the client's provider format."""
    openai_type, anthropic_type = _TYPES.get(
        error.status, ("server_error", "api_error") if error.status >= 500 else ("invalid_request_error",) * 2
    )
    if error.kind is not None:
        source, own = error.kind
        if source == "openai":
            openai_type = own
        else:
            anthropic_type = own
    if dialect == "anthropic":
        inner: dict[str, Any] = {"type": anthropic_type, "message": error.message}
        if error.details:
            inner["outlay"] = error.details
        return json.dumps({"type": "error", "error": inner}).encode()
    body: dict[str, Any] = {
        "message": error.message,
        "type": openai_type,
        "param": error.param,
        "code": error.code,
    }
    if error.details:
        body["outlay"] = error.details
    return json.dumps({"error": body}).encode()


def from_outlay_error(exc: OutlayError) -> GatewayError:
    """Translate an error raised by authentication or admission hooks."""
    if isinstance(exc, Unauthenticated):
        return GatewayError(401, exc.message, code="invalid_api_key", details={"reason": exc.reason})
    if isinstance(exc, BudgetExceeded):
        details: dict[str, Any] = {
            "scope": exc.scope,
            "key": exc.key,
            "limit": money_str(exc.limit),
            "spent": money_str(exc.spent),
            "reserved": money_str(exc.reserved),
            "estimate": money_str(exc.estimate),
        }
        if exc.budget:
            details["budget"] = exc.budget
        headers = {"x-outlay-cost": "0"}
        if exc.shared:  # every tenant's spend: not the caller's to read
            del details["spent"], details["reserved"]
            details["shared"] = True
        else:
            left = MONEY_CONTEXT.subtract(MONEY_CONTEXT.subtract(exc.limit, exc.spent), exc.reserved)
            headers["x-outlay-budget-remaining"] = money_str(max(ZERO, left))
        return GatewayError(402, exc.message, code="budget_exceeded", details=details, headers=headers)
    if isinstance(exc, RunStopped):
        return GatewayError(402, exc.message, code="run_stopped", details={"reason": exc.reason})
    if isinstance(exc, Throttled):
        seconds = max(1, int(-(-exc.retry_after // 1)))  # Retry-After is whole seconds, never 0
        return GatewayError(429, exc.message, code="cost_rate_limited", headers={"retry-after": str(seconds)})
    if isinstance(exc, Forbidden):
        return GatewayError(403, exc.message, code=exc.reason, details={"reason": exc.reason})
    if isinstance(exc, NotEntitled):
        return GatewayError(403, exc.message, code="not_entitled", details={"requires": exc.requires})
    if isinstance(exc, InvalidInput):
        return GatewayError(400, str(exc), param=exc.field)
    if isinstance(exc, BackendError):
        return GatewayError(503, f"outlay backend unavailable: {exc}", code="backend_unavailable")
    return GatewayError(500, f"outlay error: {exc}", code="internal_error")


def _upstream_error(body: bytes) -> tuple[str | None, Dialect | None, dict[str, str]]:
    """The human message inside any provider's error body (OpenAI, Anthropic, Gemini's list form),
    the format it is in, and its own ``type``, ``code`` and ``param`` (what SDK users branch on)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, {}
    if isinstance(data, list) and data:
        data = data[0]  # Gemini's OpenAI-compatible endpoint wraps the error in a list
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error, None, {}
    if not isinstance(error, dict):
        return None, None, {}
    message = error.get("message")
    dialect: Dialect = "anthropic" if isinstance(data, dict) and data.get("type") == "error" else "openai"
    fields = {k: v for k in ("type", "code", "param") if isinstance(v := error.get(k), str) and v}
    return (message if isinstance(message, str) else None), dialect, fields


def _code_is_null(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and "code" in error and error["code"] is None


def from_upstream_response(
    status: int, body: bytes, headers: Mapping[str, str], upstream: str, secret: str | None
) -> GatewayError:
    """Translate an upstream error status into the gateway's answer.

    The status is kept (so SDK retry logic behaves as against the provider), except that the
    upstream refusing *our* credentials (401/403) is a gateway fault — 502 — not the client's, and
    its message (about the operator's key and account) is logged, not sent. Other upstream messages
    are kept with the key redacted, and 429 keeps ``Retry-After``.
    """
    message, source, fields = _upstream_error(body)
    message = message or f"HTTP {status}"
    if secret:
        message = message.replace(secret, "[redacted]")
    keep: dict[str, str] = {}
    # x-should-retry: both SDKs obey it before the status (a 5xx the provider says not to retry).
    for name in ("retry-after", "retry-after-ms", "x-should-retry"):
        if name in headers:
            keep[name] = headers[name]
    if status in (401, 403):
        # The provider's words are about the operator's account, not the caller's: OpenAI's quote
        # the key (masked but for its prefix and last four characters) and name the organization.
        # They go to the operator's log; every tenant sharing the key gets only the fact.
        _log.warning(
            "upstream %s rejected the gateway's credentials (HTTP %d): %s", upstream, status, message
        )
        # Not retried by the SDKs (x-should-retry: false): the same key is refused again, and each
        # retry only makes the caller wait and the operator's log repeat itself.
        return GatewayError(
            502,
            f"upstream {upstream} rejected the gateway's credentials (HTTP {status}); the gateway's log"
            " has the provider's message",
            code="upstream_auth_failed",
            headers={"x-should-retry": "false"},
        )
    if status < 400 or status > 599:  # a redirect (not followed): the same answer every time
        return GatewayError(
            502,
            f"upstream {upstream} answered HTTP {status}",
            code="upstream_error",
            headers={"x-should-retry": "false"},
        )
    # The provider's own code, param and type (context_length_exceeded, insufficient_quota, ...)
    # reach the client as the provider sent them; the type only in the format it belongs to.
    # An OpenAI error with "code": null keeps it null (a client branching on it sees what the
    # provider said); with no code at all, the gateway names one.
    null_code = source == "openai" and _code_is_null(body)
    return GatewayError(
        status,
        f"upstream {upstream}: {message}",
        code=None if null_code else fields.get("code", "upstream_error"),
        param=fields.get("param"),
        headers=keep,
        kind=(source, fields["type"]) if source is not None and "type" in fields else None,
    )


def from_transport_error(exc: UpstreamError, upstream: str) -> tuple[GatewayError, Usage | None]:
    """504 for timeouts, 502 for anything else; and the usage that implies.

    A request that never left (connect failure) cost nothing — ``Usage()``; one that did may have
    been billed by the provider — ``None``, unknown, never zero.
    """
    usage = Usage() if exc.never_sent else None
    if exc.timeout:
        return GatewayError(
            504, f"upstream {upstream} timed out ({exc.kind})", code="upstream_timeout"
        ), usage
    message = f"upstream {upstream} unreachable or dropped the connection ({exc.kind})"
    return GatewayError(502, message, code="upstream_unavailable"), usage
