"""Assembling a served gateway: settings (TOML file + environment) -> keys, budgets, ledger -> app.

A config file (``outlay gateway --config gateway.toml``)::

    keys = "sqlite:.outlay/keys.db"        # default: $OUTLAY_KEYS_URL, else beside the ledger
    ledger = ".outlay/outlay.db"           # the outlay home; default $OUTLAY_URL
    budget_store = "sqlite:.outlay/budgets.db"   # or redis://, memory:// (1 worker); $OUTLAY_BUDGET_URL
    budgets = "budgets.toml"               # [[budget]] policies; $OUTLAY_BUDGETS_FILE
    plans = "plans.toml"                   # tiers; $OUTLAY_PLANS_FILE
    prices = "prices.toml"                 # price overrides; $OUTLAY_PRICES_FILE
    environment = "production"
    default_output_tokens = 1024
    cap_output = false                     # true: send that limit upstream when a request has none
    unpriced_estimate = "0.01"
    rate_limit = { rate = "5.00", per = 60 }   # per tenant, USD per `per` seconds
    max_body_bytes = 10485760
    max_call_seconds = 3600                # a call (stream included) ends by then; its hold lives as long
    free_requests_per_minute = 600         # per key and process, on the free routes (models, count_tokens)
    journal = ".outlay/inflight"           # calls admitted, not yet recorded; "off"; $OUTLAY_GATEWAY_JOURNAL
    aliases = { fast = "gpt-4o-mini" }
    [upstreams.local]
    kind = "openai_compatible"
    base_url = "http://vllm:8000/v1"
    [[routes]]
    pattern = "llama-*"
    upstream = "local"

The file wins over the environment; upstream URLs and keys come from ``OUTLAY_UPSTREAM_*`` and
``*_API_KEY`` (see :class:`GatewayConfig`).
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput
from outlay._journal import AdmissionJournal, journal_destination
from outlay._money import to_money
from outlay._runtime import Outlay
from outlay._urls import refuse_url_like_path
from outlay.budgets import (
    BudgetEngine,
    BudgetStore,
    CostRateLimit,
    load_plans,
    load_policies,
    open_budget_store,
)
from outlay.context import ENVIRONMENTS
from outlay.keys import default_keys_url, open_key_store

from ._app import Gateway
from ._config import GatewayConfig
from ._outlay_hooks import OutlayHooks

__all__ = ["CONFIG_ENV", "GatewaySettings", "app_from_env", "create_app", "load_settings"]

_log = logging.getLogger("outlay.gateway")

#: The environment variable through which ``outlay gateway`` hands its --config to every worker.
CONFIG_ENV: Final = "OUTLAY_GATEWAY_CONFIG"
_ROUTING: Final = frozenset(
    {"upstreams", "routes", "aliases", "max_body_bytes", "max_call_seconds", "free_requests_per_minute"}
)
_MAX_CACHE_TTL: Final = 300.0
_SETTINGS: Final = frozenset(
    {"keys", "ledger", "budget_store", "budgets", "plans", "prices", "environment",
     "default_output_tokens", "cap_output", "unpriced_estimate", "rate_limit", "cache_ttl", "journal"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything needed to build a served gateway, validated."""

    routing: GatewayConfig
    keys: str
    ledger: str | None
    budget_store: str
    budgets: str | None
    plans: str | None
    prices: str | None
    environment: str
    default_output_tokens: int
    unpriced_estimate: Decimal
    rate_limit: CostRateLimit | None
    cache_ttl: float
    cap_output: bool = False
    #: The admission journal's directory (None: off). Default: ``inflight/`` beside the keys.
    journal: str | None = None


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the gateway config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _beside(url: str, name: str) -> str:
    if url == "memory://" or "://" in url.removeprefix("sqlite:"):
        return str(Path(".outlay") / name)
    target = url.removeprefix("sqlite:")
    target = target[2:] if target.startswith("//") else target
    return str(Path(target).expanduser().parent / name)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Settings from the TOML file at ``path`` (optional) and the environment."""
    env = os.environ if environ is None else environ
    data = _read(path) if path else {}
    unknown = sorted(set(data) - _ROUTING - _SETTINGS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}", field="gateway")

    def text(name: str, variable: str | None = None) -> str | None:
        value = data.get(name, env.get(variable) if variable else None)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"expected a non-empty string, got {value!r}", field=name)
        return value

    routing = GatewayConfig.from_dict({k: v for k, v in data.items() if k in _ROUTING}, dict(env))
    ledger = text("ledger", "OUTLAY_URL")
    # The keys beside the ledger this gateway writes, whether the file or OUTLAY_URL names it.
    keys = text("keys", "OUTLAY_KEYS_URL") or default_keys_url({**env, "OUTLAY_URL": ledger or ""})
    rate = data.get("rate_limit")
    if rate is not None and not isinstance(rate, Mapping):
        raise ConfigError("expected a table {rate = ..., per = ..., burst = ...}", field="rate_limit")
    output = data.get("default_output_tokens", 1024)
    if isinstance(output, bool) or not isinstance(output, int) or output < 0:
        raise ConfigError(f"expected a non-negative integer, got {output!r}", field="default_output_tokens")
    cap = data.get("cap_output", False)
    if not isinstance(cap, bool):
        raise ConfigError(f"expected true or false, got {cap!r}", field="cap_output")
    ttl = data.get("cache_ttl", 1.0)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= _MAX_CACHE_TTL:
        # A revoked key keeps working for up to this long: never forever.
        raise ConfigError(f"expected 0 to {_MAX_CACHE_TTL:g} seconds, got {ttl!r}", field="cache_ttl")
    try:
        limit = CostRateLimit(**rate) if rate is not None else None
    except (InvalidInput, TypeError) as exc:
        raise ConfigError(str(exc), field="rate_limit") from None
    try:
        fallback = to_money(data.get("unpriced_estimate", "0.01"), field="unpriced_estimate")
    except InvalidInput as exc:
        raise ConfigError(str(exc), field="unpriced_estimate") from None
    environment = text("environment", "OUTLAY_ENVIRONMENT") or "production"
    journal = text("journal", "OUTLAY_GATEWAY_JOURNAL")
    if journal is None and ledger != "memory://":
        journal = _beside(keys, "inflight")  # on this host's disk, as the process it outlives
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"must be one of {', '.join(sorted(ENVIRONMENTS))}, got {environment!r}", field="environment"
        )
    return GatewaySettings(
        routing=routing,
        keys=keys,
        ledger=ledger,
        budget_store=text("budget_store", "OUTLAY_BUDGET_URL") or _beside(keys, "budgets.db"),
        budgets=text("budgets", "OUTLAY_BUDGETS_FILE"),
        plans=text("plans", "OUTLAY_PLANS_FILE"),
        prices=text("prices", "OUTLAY_PRICES_FILE"),
        environment=environment,
        default_output_tokens=output,
        unpriced_estimate=fallback,
        rate_limit=limit,
        cache_ttl=float(ttl),
        cap_output=cap,
        journal=None if journal == "off" else journal,
    )


def _budget_store(url: str) -> BudgetStore:
    """The store named by ``url`` (memory://, sqlite:PATH or a path, redis://), via the budgets package."""
    if not url.startswith(("memory://", "redis://", "rediss://", "unix://")):
        target = url.removeprefix("sqlite:")
        target = target[2:] if target.startswith("//") else target
        if "://" not in target:
            refuse_url_like_path(  # before a directory named after a mistyped URL is made
                target, field="budget_store", expected="memory://, a path, sqlite:PATH or redis://"
            )
            Path(target).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return open_budget_store(url)


def create_app(settings: GatewaySettings | str | os.PathLike[str] | None = None) -> Gateway:
    """A gateway with keys, budgets and the ledger, as configured. Built once per worker process."""
    if not isinstance(settings, GatewaySettings):
        settings = load_settings(settings)
    engine = BudgetEngine(
        _budget_store(settings.budget_store),
        policies=load_policies(settings.budgets) if settings.budgets else (),
        plans=load_plans(settings.plans) if settings.plans else None,
        rate_limit=settings.rate_limit,
    )
    # (The gateway journals its calls itself, and charges their holds in its budget store.)
    outlay = Outlay(settings.ledger, prices=settings.prices, service="outlay-gateway", journal=False)
    journal = (
        AdmissionJournal(settings.journal, destination=journal_destination(outlay.log, outlay.ledger_url))
        if settings.journal
        else None
    )
    hooks = OutlayHooks(
        open_key_store(settings.keys),
        outlay=outlay,
        engine=engine,
        default_output_tokens=settings.default_output_tokens,
        cap_output=settings.cap_output,
        unpriced_estimate=settings.unpriced_estimate,
        environment=settings.environment,
        cache_ttl=settings.cache_ttl,
        owned=True,
        journal=journal,
    )
    try:
        # Calls a gateway process here admitted and never recorded (it was killed mid-call).
        hooks.recover_lost_calls()
    except Exception:  # serve all the same: the journal stays, for the next start to record
        _log.exception("outlay: recording the calls of stopped gateway processes failed")
    return Gateway(settings.routing, hooks=hooks)


def app_from_env() -> Gateway:
    """The app factory each uvicorn worker calls (``--workers N``): the config path is in the env."""
    return create_app(os.environ.get(CONFIG_ENV) or None)
