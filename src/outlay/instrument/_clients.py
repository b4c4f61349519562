"""Official SDK clients with a metering transport already fitted.

::

    client = outlay.instrument.openai_client(api_key=...)       # openai.OpenAI(...)
    client = outlay.instrument.anthropic_client(api_key=...)    # anthropic.Anthropic(...)

Keyword arguments go to the SDK's constructor; ``outlay``, ``provider``, ``budgets`` and
``default_max_output_tokens`` to the transport. The HTTP client gets the SDK's own defaults
(``DefaultHttpxClient``: timeouts, redirects, connection limits), as it would without outlay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import httpx2
from httpx2._utils import get_environment_proxies

from outlay._errors import InvalidInput

from ._endpoints import DEFAULT_MAX_OUTPUT_TOKENS
from ._transports import AsyncMeteringTransport, MeteringTransport

if TYPE_CHECKING:
    import anthropic
    import openai

    from outlay import Outlay
    from outlay.budgets import BudgetEngine

__all__ = ["anthropic_client", "async_anthropic_client", "async_openai_client", "openai_client"]


def _sdk(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise InvalidInput(f"the {name} SDK is not installed (pip install {name})", field="sdk") from None


def _limits(sdk: Any) -> httpx2.Limits | None:
    limits = getattr(sdk, "DEFAULT_CONNECTION_LIMITS", None)
    return limits if isinstance(limits, httpx2.Limits) else None


def _build(
    sdk_name: str,
    client_class: str,
    *,
    asynchronous: bool,
    outlay: Outlay | None,
    provider: str | None,
    budgets: BudgetEngine | None,
    default_max_output_tokens: int,
    kwargs: dict[str, Any],
) -> Any:
    if "http_client" in kwargs:
        raise InvalidInput(
            "the metered client builds its own http_client; pass http_client=httpx2.Client("
            "transport=outlay.instrument.MeteringTransport(...)) to the SDK yourself instead",
            field="http_client",
        )
    sdk = _sdk(sdk_name)
    limits = _limits(sdk)
    options: dict[str, Any] = {} if limits is None else {"limits": limits}
    meter: dict[str, Any] = {
        "outlay": outlay,
        "provider": provider,
        "budgets": budgets,
        "default_max_output_tokens": default_max_output_tokens,
    }
    # Given a transport, httpx no longer reads the proxies of the environment (HTTPS_PROXY,
    # NO_PROXY...), as the SDK's own client does: mount a metered proxy transport for each.
    proxies = get_environment_proxies()
    if asynchronous:
        transport: Any = AsyncMeteringTransport(httpx2.AsyncHTTPTransport(**options), **meter)
        mounts: dict[str, Any] = {
            pattern: None if url is None else AsyncMeteringTransport(
                httpx2.AsyncHTTPTransport(proxy=url, **options), **meter
            )
            for pattern, url in proxies.items()
        }  # fmt: skip
        http_client: Any = sdk.DefaultAsyncHttpxClient(transport=transport, mounts=mounts)
    else:
        transport = MeteringTransport(httpx2.HTTPTransport(**options), **meter)
        mounts = {
            pattern: None
            if url is None
            else MeteringTransport(httpx2.HTTPTransport(proxy=url, **options), **meter)
            for pattern, url in proxies.items()
        }
        http_client = sdk.DefaultHttpxClient(transport=transport, mounts=mounts)
    return getattr(sdk, client_class)(http_client=http_client, **kwargs)


def openai_client(
    *,
    outlay: Outlay | None = None,
    provider: str | None = None,
    budgets: BudgetEngine | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **kwargs: Any,
) -> openai.OpenAI:
    """``openai.OpenAI(**kwargs)`` metered through a :class:`MeteringTransport`."""
    client: openai.OpenAI = _build(
        "openai", "OpenAI", asynchronous=False, outlay=outlay, provider=provider, budgets=budgets,
        default_max_output_tokens=default_max_output_tokens, kwargs=kwargs,
    )  # fmt: skip
    return client


def async_openai_client(
    *,
    outlay: Outlay | None = None,
    provider: str | None = None,
    budgets: BudgetEngine | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **kwargs: Any,
) -> openai.AsyncOpenAI:
    """``openai.AsyncOpenAI(**kwargs)`` metered through an :class:`AsyncMeteringTransport`."""
    client: openai.AsyncOpenAI = _build(
        "openai", "AsyncOpenAI", asynchronous=True, outlay=outlay, provider=provider, budgets=budgets,
        default_max_output_tokens=default_max_output_tokens, kwargs=kwargs,
    )  # fmt: skip
    return client


def anthropic_client(
    *,
    outlay: Outlay | None = None,
    provider: str | None = None,
    budgets: BudgetEngine | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **kwargs: Any,
) -> anthropic.Anthropic:
    """``anthropic.Anthropic(**kwargs)`` metered through a :class:`MeteringTransport`."""
    client: anthropic.Anthropic = _build(
        "anthropic", "Anthropic", asynchronous=False, outlay=outlay, provider=provider, budgets=budgets,
        default_max_output_tokens=default_max_output_tokens, kwargs=kwargs,
    )  # fmt: skip
    return client


def async_anthropic_client(
    *,
    outlay: Outlay | None = None,
    provider: str | None = None,
    budgets: BudgetEngine | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **kwargs: Any,
) -> anthropic.AsyncAnthropic:
    """``anthropic.AsyncAnthropic(**kwargs)`` metered through an :class:`AsyncMeteringTransport`."""
    client: anthropic.AsyncAnthropic = _build(
        "anthropic", "AsyncAnthropic", asynchronous=True, outlay=outlay, provider=provider, budgets=budgets,
        default_max_output_tokens=default_max_output_tokens, kwargs=kwargs,
    )  # fmt: skip
    return client
