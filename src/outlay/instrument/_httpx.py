"""The same transports for the plain ``httpx`` package (SDK versions before httpx2, other clients).

::

    client = openai.OpenAI(http_client=httpx.Client(transport=HttpxMeteringTransport()))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import httpx

from ._base import AsyncStreamMixin, AsyncTransportMixin, SyncStreamMixin, SyncTransportMixin
from ._core import Meter
from ._endpoints import DEFAULT_MAX_OUTPUT_TOKENS

if TYPE_CHECKING:
    from types import ModuleType

    from outlay import Outlay
    from outlay.budgets import BudgetEngine

__all__ = ["AsyncHttpxMeteringTransport", "HttpxMeteringTransport"]


class _SyncStream(SyncStreamMixin, httpx.SyncByteStream):
    pass


class _AsyncStream(AsyncStreamMixin, httpx.AsyncByteStream):
    pass


class HttpxMeteringTransport(SyncTransportMixin, httpx.BaseTransport):
    """:class:`outlay.instrument.MeteringTransport` for ``httpx.Client`` (default wrapped:
    ``httpx.HTTPTransport()``)."""

    _lib: ClassVar[ModuleType] = httpx
    _stream_class = _SyncStream

    def __init__(
        self,
        wrapped: httpx.BaseTransport | None = None,
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
        self._wrapped = wrapped if wrapped is not None else httpx.HTTPTransport()


class AsyncHttpxMeteringTransport(AsyncTransportMixin, httpx.AsyncBaseTransport):
    """:class:`outlay.instrument.AsyncMeteringTransport` for ``httpx.AsyncClient``."""

    _lib: ClassVar[ModuleType] = httpx
    _stream_class = _AsyncStream

    def __init__(
        self,
        wrapped: httpx.AsyncBaseTransport | None = None,
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
        self._wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport()
