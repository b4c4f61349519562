"""``MeteringTransport`` / ``AsyncMeteringTransport``: the httpx2 transports the official SDKs accept.

::

    client = openai.OpenAI(http_client=httpx2.Client(transport=MeteringTransport()))

The ``openai`` (3.x) and ``anthropic`` (2.x) SDKs send through ``httpx2``; for SDK versions (or
other code) on plain ``httpx`` use :class:`outlay.instrument.HttpxMeteringTransport` and friends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import httpx2

from ._base import AsyncStreamMixin, AsyncTransportMixin, SyncStreamMixin, SyncTransportMixin
from ._core import Meter
from ._endpoints import DEFAULT_MAX_OUTPUT_TOKENS

if TYPE_CHECKING:
    from types import ModuleType

    from outlay import Outlay
    from outlay.budgets import BudgetEngine

__all__ = ["AsyncMeteringTransport", "MeteringTransport"]


class _SyncStream(SyncStreamMixin, httpx2.SyncByteStream):
    pass


class _AsyncStream(AsyncStreamMixin, httpx2.AsyncByteStream):
    pass


class MeteringTransport(SyncTransportMixin, httpx2.BaseTransport):
    """Meters every LLM call sent through ``wrapped`` (default: a new ``httpx2.HTTPTransport()``).

    ``outlay``: the pipeline to record into (default: ``outlay.get_outlay()``, looked up per call);
    ``provider``: bill every call to this provider (default: from the API host, else the path);
    ``budgets``: the engine to enforce (default: ``outlay.budgets.get_engine()``);
    ``default_max_output_tokens``: assumed output for the estimate when a request sets no limit.
    """

    _lib: ClassVar[ModuleType] = httpx2
    _stream_class = _SyncStream

    def __init__(
        self,
        wrapped: httpx2.BaseTransport | None = None,
        *,
        outlay: Outlay | None = None,
        provider: str | None = None,
        budgets: BudgetEngine | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        self._meter = Meter(
            outlay=outlay,
            provider=provider,
            budgets=budgets,
            default_max_output_tokens=default_max_output_tokens,
        )
        self._wrapped = wrapped if wrapped is not None else httpx2.HTTPTransport()


class AsyncMeteringTransport(AsyncTransportMixin, httpx2.AsyncBaseTransport):
    """The async twin of :class:`MeteringTransport` (default: a new ``httpx2.AsyncHTTPTransport()``).

    Recording and settling run in a worker thread, shielded from cancellation, so the event loop
    never waits on a durable commit and a cancelled call is still recorded.
    """

    _lib: ClassVar[ModuleType] = httpx2
    _stream_class = _AsyncStream

    def __init__(
        self,
        wrapped: httpx2.AsyncBaseTransport | None = None,
        *,
        outlay: Outlay | None = None,
        provider: str | None = None,
        budgets: BudgetEngine | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        self._meter = Meter(
            outlay=outlay,
            provider=provider,
            budgets=budgets,
            default_max_output_tokens=default_max_output_tokens,
        )
        self._wrapped = wrapped if wrapped is not None else httpx2.AsyncHTTPTransport()
