"""``VirtualKey``: a gateway credential that stands for one tenant (and its policies).

The secret (``olk_`` + 32 random bytes, URL-safe base64) is shown once, when it is created; only its
SHA-256 is stored. A 256-bit random secret needs no salt or slow hash: there is nothing to guess
from the digest, and a plain digest lets the gateway find a key with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from outlay._errors import InvalidInput
from outlay._money import to_money
from outlay.budgets import Budget

__all__ = ["PREFIX", "VirtualKey", "generate_secret", "hash_secret", "parse_budget"]

PREFIX: Final = "olk_"
#: How much of the secret is kept in clear to tell keys apart in listings (``olk_3fA9xQ``).
DISPLAY_CHARS: Final = 10
_MAX: Final = 200
_BUDGET = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*(\S+))?\s*$")


def generate_secret() -> str:
    """A new key secret: ``olk_`` + 32 bytes from the OS CSPRNG, URL-safe base64."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def parse_budget(text: str) -> tuple[Decimal, str]:
    """``"25.00/month"`` -> ``(Decimal("25.00"), "month")``; the period defaults to ``month``.

    Periods are the budgets package's: ``hour``, ``day``, ``month``, ``rolling:<n>[smhd]``.
    """
    match = _BUDGET.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"expected AMOUNT[/PERIOD] such as 25.00/month or 5/day, got {text!r}", field="budget"
        )
    amount = to_money(match.group(1), field="budget")
    if amount <= 0:
        raise InvalidInput(f"must be positive, got {amount}", field="budget")
    period = match.group(2) or "month"
    Budget(amount, scope="tenant", period=period)  # validates the period, naming it
    return amount, period


def check_name(name: str, value: object) -> str:
    # Printable, as the cost context and events the key's calls are attributed with must be.
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX or not value.isprintable():
        raise InvalidInput(
            f"must be a non-empty printable string of at most {_MAX} characters, got {value!r}", field=name
        )
    return value


def _escape_part(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A virtual key as stored: never its secret. ``policies`` are the budgets it brings along.

    A key's budget limits its tenant (``scope="tenant"``); with a ``feature`` it also limits that
    tenant's feature, on a counter of its own (``feature`` counters are keyed ``<tenant>/<feature>``
    so two tenants' features never share one).
    """

    id: str
    prefix: str
    tenant: str
    created_at: datetime
    workspace: str | None = None
    feature: str | None = None
    name: str | None = None
    budget: Decimal | None = None
    period: str | None = None
    revoked_at: datetime | None = None
    policies: tuple[Budget, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_name("tenant", self.tenant)
        for name in ("workspace", "feature", "name"):
            value = getattr(self, name)
            if value is not None:
                check_name(name, value)
        policies: tuple[Budget, ...] = ()
        if self.budget is not None:
            period = self.period or "month"
            label = self.name or self.id
            policies = (
                Budget(self.budget, scope="tenant", key=self.tenant, period=period, name=f"key {label}"),
            )
            if self.feature is not None:
                policies += (
                    Budget(
                        self.budget,
                        scope="feature",
                        key=self.feature_key,
                        period=period,
                        name=f"key {label} ({self.feature})",
                    ),
                )
        # Built once per key, not per request: Budget validation is off the hot path.
        object.__setattr__(self, "policies", policies)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def feature_key(self) -> str | None:
        """The tenant-qualified counter value of the key's feature budget: ``tenant/feature``, each
        with ``%`` and ``/`` escaped, so tenant ``x`` feature ``y/chat`` and tenant ``x/y`` feature
        ``chat`` never share a counter."""
        if self.feature is None:
            return None
        return f"{_escape_part(self.tenant)}/{_escape_part(self.feature)}"

    def to_dict(self) -> dict[str, object]:
        """For listings: everything but the secret (which is not stored anyway)."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "tenant": self.tenant,
            "workspace": self.workspace,
            "feature": self.feature,
            "budget": None if self.budget is None else f"{self.budget}/{self.period or 'month'}",
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }
