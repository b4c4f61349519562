"""The metering seam: what the gateway asks of keys, budgets and the ledger, per request.

The gateway calls, in order::

    principal = await hooks.authenticate(headers)        # Unauthenticated  -> 401
    admission = await hooks.admit(principal, call)       # BudgetExceeded   -> 402, Throttled -> 429
    ... forward to the upstream, stream back ...
    settlement = await hooks.complete(admission, outcome)  # always, success or failure

``complete`` is called exactly once for every admitted call — upstream errors, timeouts and client
disconnects included — so a reservation is always settled or released. Its result fills the
``X-Outlay-Cost`` and ``X-Outlay-Budget-Remaining`` headers of non-streaming answers (a stream's
headers leave before its usage is known; its cost is settled all the same).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from types import MappingProxyType
from typing import Any, Protocol

from outlay._errors import BudgetExceeded, Unauthenticated
from outlay._money import MONEY_CONTEXT, ZERO
from outlay._usage import Usage

from ._config import MAX_CALL_SECONDS, Api, Upstream

__all__ = [
    "Admission",
    "Call",
    "GatewayHooks",
    "InMemoryHooks",
    "OpenHooks",
    "Outcome",
    "Principal",
    "Settlement",
    "client_key",
]


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant a virtual key belongs to, and that key's policies."""

    tenant_id: str | None
    key_id: str | None = None
    workspace_id: str | None = None
    policies: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", _frozen(self.policies))


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the gateway understood it, before anything was sent upstream."""

    api: Api
    requested_model: str  # as the client sent it (maybe an alias or "upstream/model")
    model: str  # what will be sent upstream unless admission rewrites it
    upstream: Upstream
    stream: bool
    body: Mapping[str, Any]  # the parsed JSON body (read-only by convention)
    headers: Mapping[str, str]  # the client's headers, lower-cased (baggage, X-Outlay-*, ...)
    raw: bytes = b""  # the body as received (its size estimates input; its hash spots retry storms)
    max_seconds: float = MAX_CALL_SECONDS  # the gateway ends the call by then: a budget hold outlives it


@dataclass(frozen=True, slots=True)
class Admission:
    """The go-ahead for one call; ``model`` may differ from the call's (a soft-limit downgrade)."""

    principal: Principal
    call: Call
    model: str
    reservation: object = None  # opaque to the gateway: whatever the hooks need to settle
    reserved: Decimal | None = None
    budget_remaining: Decimal | None = None  # None: no hard limit applies ("unlimited")
    downgraded_from: str | None = None
    #: An output limit to add to the request upstream (chat's ``max_completion_tokens``, the
    #: Responses API's ``max_output_tokens``) when it has none: what the budget hold assumed.
    output_limit: int | None = None
    #: False when what is left could not be read (the budget store unreachable): no
    #: X-Outlay-Budget-Remaining at all rather than a wrong figure or "unlimited".
    budget_known: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened upstream. ``usage`` is ``None`` when unknown (e.g. a timeout after sending the
    request: the provider may have billed it) and ``complete=False`` when it is a lower bound (a
    stream cut before its final usage, a 2xx without usage) — never silently zero."""

    status: int  # HTTP status the client got
    usage: Usage | None
    model: str | None  # as the upstream reported it
    latency_s: float
    response_id: str | None = None
    error: str | None = None
    client_disconnected: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    """The settled cost (``None``: unpriced, which is not zero) and what is left of the budget."""

    cost: Decimal | None = None
    budget_remaining: Decimal | None = None  # None: no hard limit applies ("unlimited")
    budget_known: bool = True  # False: what is left is not known (no header)


class GatewayHooks(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Principal: ...

    async def admit(self, principal: Principal, call: Call) -> Admission: ...

    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement: ...


def client_key(headers: Mapping[str, str]) -> str | None:
    """The client's credential: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return headers.get("x-api-key") or None


class OpenHooks:
    """No keys, no budgets, no ledger: every caller is anonymous and unattributed. For local use."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return Principal(tenant_id=None)

    async def admit(self, principal: Principal, call: Call) -> Admission:
        return Admission(principal, call, call.model)

    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        return Settlement()


Pricer = Callable[[str, Usage], Decimal | None]


class InMemoryHooks:
    """Virtual keys, per-tenant hard limits and a record of every outcome, all in memory (for tests).

    ``keys`` maps a virtual key to its :class:`Principal`; ``revoked`` keys get a 401 naming the
    revocation. ``limits`` maps a tenant to a hard limit in USD; each admitted call reserves
    ``estimate`` and settles at ``price(model, usage)``. Check and reservation happen with no
    ``await`` in between, so concurrent requests on one event loop cannot overshoot by more than
    the calls already admitted. ``downgrades`` maps a model to a cheaper one used once a tenant
    has spent ``soft_fraction`` of its limit.
    """

    def __init__(
        self,
        keys: Mapping[str, Principal],
        *,
        limits: Mapping[str, Decimal] | None = None,
        price: Pricer | None = None,
        estimate: Decimal = Decimal("0.01"),
        downgrades: Mapping[str, str] | None = None,
        soft_fraction: Decimal = Decimal("0.8"),
    ) -> None:
        self.keys = dict(keys)
        self.revoked: set[str] = set()
        self.limits = dict(limits or {})
        self.price = price
        self.estimate = estimate
        self.downgrades = dict(downgrades or {})
        self.soft_fraction = soft_fraction
        self.spent: dict[str, Decimal] = {}
        self.reserved: dict[str, Decimal] = {}
        self.outcomes: list[tuple[Admission, Outcome, Settlement]] = []

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = client_key(headers)
        if key is None:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'", reason="missing"
            )
        if key in self.revoked:
            raise Unauthenticated("this API key has been revoked", reason="revoked")
        principal = self.keys.get(key)
        if principal is None:
            raise Unauthenticated("unknown API key", reason="unknown")
        return principal

    async def admit(self, principal: Principal, call: Call) -> Admission:
        tenant = principal.tenant_id or ""
        limit = self.limits.get(tenant)
        if limit is None:
            return Admission(principal, call, call.model)
        with localcontext(MONEY_CONTEXT):
            spent, reserved = self.spent.get(tenant, ZERO), self.reserved.get(tenant, ZERO)
            if spent + reserved + self.estimate > limit:
                raise BudgetExceeded(
                    f"tenant {tenant} is over its hard limit of {limit} USD"
                    f" (spent {spent}, reserved {reserved})",
                    scope="tenant",
                    key=tenant,
                    limit=limit,
                    spent=spent,
                    reserved=reserved,
                    estimate=self.estimate,
                )
            self.reserved[tenant] = reserved + self.estimate
            model, downgraded = call.model, None
            if spent >= limit * self.soft_fraction and call.model in self.downgrades:
                model, downgraded = self.downgrades[call.model], call.model
            remaining = limit - spent - reserved - self.estimate
        return Admission(
            principal,
            call,
            model,
            reservation=tenant,
            reserved=self.estimate,
            budget_remaining=remaining,
            downgraded_from=downgraded,
        )

    async def complete(self, admission: Admission, outcome: Outcome) -> Settlement:
        tenant = admission.reservation
        cost: Decimal | None = None
        usage = outcome.usage
        if usage is not None and usage.complete and usage.is_empty and outcome.status >= 400:
            cost = ZERO  # the provider billed nothing (an error answer)
        elif usage is not None and self.price is not None:
            cost = self.price(outcome.model or admission.model, usage)
            if not usage.complete and cost is not None:  # a lower bound: bill at least the estimate
                cost = max(cost, admission.reserved or self.estimate)
        remaining = None
        if isinstance(tenant, str):
            with localcontext(MONEY_CONTEXT):
                self.reserved[tenant] = self.reserved.get(tenant, ZERO) - (admission.reserved or ZERO)
                # Unknown cost keeps the estimate as spent: never assume an unknown call was free.
                self.spent[tenant] = self.spent.get(tenant, ZERO) + (
                    cost if cost is not None else self.estimate
                )
                remaining = self.limits[tenant] - self.spent[tenant] - self.reserved[tenant]
        settlement = Settlement(cost, remaining)
        self.outcomes.append((admission, outcome, settlement))
        return settlement
