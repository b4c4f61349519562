"""Metering without the gateway: an HTTP transport for the official ``openai`` and ``anthropic`` SDKs.

::

    import outlay, outlay.instrument

    client = outlay.instrument.openai_client()   # or openai.OpenAI(http_client=httpx2.Client(
                                                 #     transport=outlay.instrument.MeteringTransport()))
    with outlay.attribute(tenant="acme"), outlay.run("support-agent", budget=outlay.Budget(limit="2")):
        client.chat.completions.create(model="gpt-4o", messages=[...])   # metered, budgeted

Every call to a generation endpoint is admitted by the budget engine in the current cost context,
forwarded, and recorded (durably) with its usage and exact cost; streams are metered as they pass.
``HttpxMeteringTransport``/``AsyncHttpxMeteringTransport`` do the same for plain ``httpx`` clients
(imported on first use, so ``httpx`` is only needed by those who use them). See docs/instrument.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import DOWNGRADE_HEADER
from ._clients import anthropic_client, async_anthropic_client, async_openai_client, openai_client
from ._endpoints import DEFAULT_MAX_OUTPUT_TOKENS
from ._transports import AsyncMeteringTransport, MeteringTransport

if TYPE_CHECKING:
    from ._httpx import AsyncHttpxMeteringTransport, HttpxMeteringTransport

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DOWNGRADE_HEADER",
    "AsyncHttpxMeteringTransport",
    "AsyncMeteringTransport",
    "HttpxMeteringTransport",
    "MeteringTransport",
    "anthropic_client",
    "async_anthropic_client",
    "async_openai_client",
    "openai_client",
]


def __getattr__(name: str) -> Any:
    if name in ("HttpxMeteringTransport", "AsyncHttpxMeteringTransport"):
        from . import _httpx

        return getattr(_httpx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
