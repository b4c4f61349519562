"""The simulated platform's customers: who they are, which plan they pay for, which models it buys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from outlay._errors import InvalidInput

__all__ = ["FEATURES", "MIN_TENANTS", "PLANS", "POWER_USER", "Tenant", "roster"]

MIN_TENANTS: Final = 6
PLANS: Final = ("free", "pro", "enterprise")

_NAMES: Final = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark",
    "wayne", "wonka", "soylent", "tyrell", "cyberdyne", "aperture",
)  # fmt: skip
# Every plan is present among the first MIN_TENANTS; the power user is a flat-priced "pro" customer,
# the margin-collapse case DESIGN.md opens with.
_PLAN_CYCLE: Final = ("enterprise", "pro", "free", "enterprise", "pro", "free", "pro", "enterprise")
POWER_USER: Final = "globex"

#: Features each plan's users run, with their relative frequency.
FEATURES: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    "free": (("support-bot", 5), ("doc-search", 4), ("research", 1)),
    "pro": (("support-bot", 3), ("doc-search", 2), ("research", 3), ("code-review", 3)),
    "enterprise": (("support-bot", 2), ("doc-search", 2), ("research", 3), ("code-review", 3)),
}


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    plan: str
    power_user: bool = False
    #: Its own fine-tune on the self-hosted vLLM (unpriced on purpose: nobody added its price).
    fine_tune: bool = False

    @property
    def weight(self) -> int:
        """How many of the platform's runs this tenant makes, relative to the others."""
        return {"free": 1, "pro": 2, "enterprise": 3}[self.plan]


def roster(count: int) -> list[Tenant]:
    """``count`` tenants (at least :data:`MIN_TENANTS`), the same ones for the same count."""
    if count < MIN_TENANTS:
        raise InvalidInput(f"the demo needs at least {MIN_TENANTS} tenants, got {count}", field="tenants")
    tenants = []
    for index in range(count):
        name = _NAMES[index] if index < len(_NAMES) else f"tenant-{index + 1:03d}"
        plan = _PLAN_CYCLE[index % len(_PLAN_CYCLE)]
        tenants.append(
            Tenant(name=name, plan=plan, power_user=name == POWER_USER, fine_tune=name == "umbrella")
        )
    return tenants
