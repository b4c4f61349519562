"""The plans file: each tenant's revenue model, read from TOML into exact decimals.

::

    [tenants.acme]
    model = "flat"
    monthly_fee = "500"

    [tenants.globex]
    model = "per_seat"
    seat_price = "20"
    seats = 12

    [tenants.initech]
    model = "consumption"
    markup = "1.3"              # revenue = 1.3 x cost ...
    # per_1k_tokens = "0.002"   # ... or a price per 1,000 tokens (input + output)

Money is given as strings or integers: a TOML float has already lost the exact value, so it is
refused with the field named, like every other mistake.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation
from pathlib import Path
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput
from outlay._money import to_money

__all__ = ["MODELS", "REVENUE_CONTEXT", "Plan", "Plans", "check_rate", "load_plans", "parse_plans"]

MODELS: Final = ("flat", "per_seat", "consumption")
_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "flat": frozenset({"model", "monthly_fee"}),
    "per_seat": frozenset({"model", "seat_price", "seats"}),
    "consumption": frozenset({"model", "markup", "per_1k_tokens"}),
}
_THOUSAND: Final = Decimal(1000)
#: Revenue and margin arithmetic: a rate (up to 22 digits) times a month's cost (up to the 60 digits
#: of MONEY_CONTEXT) has up to 82 digits, so money's 60 would round; exact here, and still refusing to
#: round.
REVENUE_CONTEXT: Final = Context(prec=200, traps=[Inexact, InvalidOperation])


@dataclass(frozen=True, slots=True)
class Plan:
    """One tenant's revenue model. Exactly the fields of its ``model`` are set."""

    tenant: str
    model: str
    monthly_fee: Decimal | None = None
    seat_price: Decimal | None = None
    seats: int | None = None
    markup: Decimal | None = None
    per_1k_tokens: Decimal | None = None

    def revenue(self, cost: Decimal | None, tokens: int) -> Decimal | None:
        """Revenue of one billing period given its known ``cost`` and ``tokens``.

        ``None`` when it depends on a cost that is entirely unknown (a markup over unpriced usage).
        """
        if self.model == "flat":
            assert self.monthly_fee is not None
            return self.monthly_fee
        if self.model == "per_seat":
            assert self.seat_price is not None
            assert self.seats is not None
            return REVENUE_CONTEXT.multiply(self.seat_price, Decimal(self.seats))
        if self.markup is not None:
            return None if cost is None else REVENUE_CONTEXT.multiply(cost, self.markup)
        assert self.per_1k_tokens is not None
        return REVENUE_CONTEXT.divide(
            REVENUE_CONTEXT.multiply(self.per_1k_tokens, Decimal(tokens)), _THOUSAND
        )

    @property
    def depends_on_cost(self) -> bool:
        return self.markup is not None


@dataclass(frozen=True, slots=True)
class Plans:
    """The plans of every tenant, by tenant id."""

    by_tenant: Mapping[str, Plan]

    def get(self, tenant: str) -> Plan | None:
        return self.by_tenant.get(tenant)


_MAX_RATE: Final = Decimal(10) ** 9
_MAX_PLACES: Final = 12
_MAX_SEATS: Final = 10**9


def check_rate(value: object, field: str) -> Decimal:
    """A price, fee or markup: exact, 0 to 1e9, at most 12 decimal places — bounded so that
    multiplying it by any ledger cost stays exact (money arithmetic refuses to round)."""
    amount = to_money(value, field=field)
    exponent = amount.as_tuple().exponent
    if amount > _MAX_RATE or (isinstance(exponent, int) and exponent < -_MAX_PLACES and amount != 0):
        raise InvalidInput(
            f"must be at most {_MAX_RATE} with at most {_MAX_PLACES} decimal places, got {value!r}",
            field=field,
        )
    return amount


def _amount(entry: Mapping[str, Any], name: str, where: str) -> Decimal:
    if name not in entry:
        raise ConfigError("is required", field=f"{where}.{name}")
    try:
        return check_rate(entry[name], f"{where}.{name}")
    except InvalidInput as exc:
        raise ConfigError(str(exc).removeprefix(f"{exc.field}: "), field=exc.field) from None


def _plan(tenant: str, entry: object) -> Plan:
    where = f"tenants.{tenant}"
    if not isinstance(entry, Mapping):
        raise ConfigError("must be a table", field=where)
    model = entry.get("model")
    if model not in MODELS:
        raise ConfigError(f"must be one of {', '.join(MODELS)}, got {model!r}", field=f"{where}.model")
    unknown = sorted(set(entry) - _FIELDS[model])
    if unknown:
        raise ConfigError(
            f"unknown key(s) for a {model} plan: {', '.join(unknown)}", field=f"{where}.{unknown[0]}"
        )
    if model == "flat":
        return Plan(tenant, model, monthly_fee=_amount(entry, "monthly_fee", where))
    if model == "per_seat":
        seats = entry.get("seats")
        if isinstance(seats, bool) or not isinstance(seats, int) or not 0 <= seats <= _MAX_SEATS:
            raise ConfigError(
                f"must be a whole number from 0 to {_MAX_SEATS}, got {seats!r}", field=f"{where}.seats"
            )
        return Plan(tenant, model, seat_price=_amount(entry, "seat_price", where), seats=seats)
    given = [name for name in ("markup", "per_1k_tokens") if name in entry]
    if len(given) != 1:
        raise ConfigError("a consumption plan needs exactly one of markup or per_1k_tokens", field=where)
    price = _amount(entry, given[0], where)
    if given[0] == "markup":
        return Plan(tenant, model, markup=price)
    return Plan(tenant, model, per_1k_tokens=price)


def parse_plans(data: Mapping[str, Any]) -> Plans:
    """Plans from an already-parsed document (``{"tenants": {id: {...}}}``)."""
    unknown = sorted(set(data) - {"tenants"})
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(unknown)}", field=unknown[0])
    tenants = data.get("tenants", {})
    if not isinstance(tenants, Mapping):
        raise ConfigError("must be a table of tenant plans", field="tenants")
    return Plans({tenant: _plan(tenant, entry) for tenant, entry in tenants.items()})


def load_plans(source: str | os.PathLike[str]) -> Plans:
    """Plans from a TOML file path (or, for a ``str`` holding a newline or ``[``, TOML text)."""
    text = os.fspath(source)
    origin = "plans text"
    if not (isinstance(source, str) and ("\n" in text or text.lstrip().startswith("["))):
        path = Path(text).expanduser()
        origin = f"plans file {str(path)!r}"
        try:
            text = path.read_bytes().decode()  # TOML is UTF-8, whatever the locale
        except OSError as exc:
            raise ConfigError(f"cannot read {origin}: {exc.strerror}", field="plans") from None
        except UnicodeDecodeError as exc:
            message = f"cannot read {origin}: not UTF-8 text (byte {exc.start})"
            raise ConfigError(message, field="plans") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {origin}: {exc}", field="plans") from None
    return parse_plans(data)
