"""Exact money: ``Decimal`` everywhere, arithmetic that refuses to round.

Costs are exact decimals in USD. Some published prices carry 18 decimal places (per million tokens),
so no fixed integer unit (nano- or pico-dollars) can hold every cost exactly: storage keeps the exact
decimal (TEXT in SQLite, NUMERIC in PostgreSQL). All money arithmetic runs in :data:`MONEY_CONTEXT`,
which has 60 digits of precision and traps ``Inexact``: if a sum or product would ever round, it
raises instead of silently losing money.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Final

from ._errors import InvalidInput

__all__ = [
    "MAX_AMOUNT",
    "MAX_PLACES",
    "MONEY_CONTEXT",
    "ZERO",
    "amount_problem",
    "money_str",
    "money_sum",
    "parse_money",
    "to_money",
]

MONEY_CONTEXT: Final = Context(prec=60, traps=[Inexact, InvalidOperation])
ZERO: Final = Decimal(0)
#: The amounts a ledger can total exactly: below 10^15 with at most 36 decimal places (a cost rated
#: from an 18-decimal price per million tokens has 24). A billion such amounts still sum within the
#: 60 digits of MONEY_CONTEXT; a Decimal made from a float (0.1 is 55 digits) or 1E-1000 would not,
#: and once in an append-only ledger it would break every total it joins.
MAX_AMOUNT: Final = Decimal(10) ** 15
MAX_PLACES: Final = 36
_QUANTUM: Final = Decimal(1).scaleb(-MAX_PLACES)


def amount_problem(amount: Decimal) -> str | None:
    """Why the finite, non-negative ``amount`` cannot be totalled exactly, or ``None`` if it can."""
    if amount >= MAX_AMOUNT:
        return f"must be below 10^15, got {amount}"
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        try:  # trailing zeros past the limit are fine: 0.5000...000 is 0.5
            amount.quantize(_QUANTUM, context=MONEY_CONTEXT)
        except (Inexact, InvalidOperation):
            return (
                f"has more than {MAX_PLACES} decimal places, got {amount}"
                " (Decimal(0.1) has 55: make amounts from strings, Decimal('0.1'))"
            )
    return None


def to_money(value: object, *, field: str = "cost", allow_negative: bool = False) -> Decimal:
    """Return ``value`` as an exact, finite ``Decimal``.

    Accepts ``Decimal``, ``int`` and decimal strings ("0.0125"). Floats are refused: a float has
    already lost the exact value, so accepting it would hide the bug rather than fix it.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"expected a decimal amount, got a bool {value!r}", field=field)
    if isinstance(value, float):
        raise InvalidInput(
            f"floats are not accepted for money (got {value!r}); pass a string or Decimal", field=field
        )
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        if not value.isascii() or "_" in value:
            # Decimal() also reads "1_000" and other scripts' digits ("١"): not a plain amount.
            raise InvalidInput(f"not a plain decimal amount: {value!r}", field=field)
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidInput(f"not a decimal amount: {value!r}", field=field) from None
    else:
        raise InvalidInput(f"expected a decimal amount, got {type(value).__name__}", field=field)
    if not amount.is_finite():
        raise InvalidInput(f"amount must be finite, got {value!r}", field=field)
    if amount < 0 and not allow_negative:
        raise InvalidInput(f"amount must not be negative, got {value!r}", field=field)
    problem = amount_problem(amount.copy_abs())  # one no ledger, budget store or sum could hold exactly
    if problem is not None:
        raise InvalidInput(problem, field=field)
    return amount


def parse_money(value: object, *, field: str = "cost", allow_negative: bool = False) -> Decimal:
    """Alias of :func:`to_money` for readability at decoding sites."""
    return to_money(value, field=field, allow_negative=allow_negative)


def money_str(amount: Decimal) -> str:
    """Canonical text of an amount: no exponent, no trailing zeros ("0.0000025", "12", "0")."""
    if amount == 0:
        return "0"
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def money_sum(amounts: Iterable[Decimal]) -> Decimal:
    """Exact sum; raises ``decimal.Inexact`` rather than round."""
    with localcontext(MONEY_CONTEXT):
        total = ZERO
        for amount in amounts:
            total += amount
        return total
