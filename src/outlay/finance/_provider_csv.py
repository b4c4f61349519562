"""Reading a provider's usage or cost export (CSV) into totals per UTC day and model.

Known export shapes are recognised by their header row (column names as the exports write them):

- ``openai-costs``: the usage dashboard's *Cost* export grouped by line item — ``start_time`` (Unix
  seconds), ``amount_value``, ``amount_currency``, ``line_item`` (``"gpt-4o-2024-08-06, input"``:
  the model is the part before the comma).
- ``openai-usage``: the *Activity* export — ``start_time``, ``model``, ``input_tokens`` (cached
  ones included, as in outlay), ``output_tokens``. Tokens only: no cost to compare.
- ``anthropic-cost``: the Console's cost export — ``usage_date_utc``, ``model`` (a display name,
  ``Claude Sonnet 4``), ``cost_usd``.
- ``anthropic-usage``: the Console's usage export — ``usage_date_utc``, ``model_version``,
  ``usage_input_tokens_no_cache``, ``usage_input_tokens_cache_write_5m`` / ``_1h``,
  ``usage_input_tokens_cache_read``, ``usage_output_tokens``. Tokens only.
- ``generic`` (any provider): ``date``, ``model``, ``cost`` and optionally ``tokens``; or any header
  mapped onto those four names with ``columns="date=Day,model=Model,cost=Spend"``.

Models are matched on :func:`model_key`, so a console's display name meets the API's snapshot id.
Money is exact: amounts are read from the file's text as ``Decimal``, summed without rounding.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Final

from outlay._errors import InvalidInput
from outlay._money import MONEY_CONTEXT

__all__ = ["SHAPES", "ProviderExport", "in_range", "model_key", "parse_provider_csv", "provider_name"]

_PROVIDER: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_SNAPSHOT: Final = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
_FIELDS: Final = ("date", "model", "cost", "tokens")
# Amounts are bounded so that any sum of them stays exact in MONEY_CONTEXT's 60 digits (and no
# "1e999999" can make a reply a million characters long).
_MAX_AMOUNT: Final = Decimal(10) ** 12
_PLACES: Final = 30
_WIDE: Final = Context(prec=80)


@dataclass(frozen=True, slots=True)
class _Shape:
    name: str
    provider: str | None  # None: any provider
    date: str
    model: str
    cost: str | None
    tokens: tuple[str, ...] = ()  # summed; the first one is required when there is no cost
    currency: str | None = None
    line_item: bool = False  # the model is the part of the cell before the first comma

    @property
    def needs(self) -> tuple[str, ...]:
        wanted = (self.date, self.model, self.cost, *self.tokens[: 1 if self.cost is None else 0])
        return tuple(name for name in wanted if name is not None)


#: The export shapes recognised from a header row, per provider (``generic`` for any).
SHAPES: Final = (
    _Shape("openai-costs", "openai", "start_time", "line_item", "amount_value", currency="amount_currency",
           line_item=True),
    _Shape("openai-usage", "openai", "start_time", "model", None, ("input_tokens", "output_tokens")),
    _Shape("anthropic-cost", "anthropic", "usage_date_utc", "model", "cost_usd"),
    _Shape("anthropic-usage", "anthropic", "usage_date_utc", "model_version", None,
           ("usage_output_tokens", "usage_input_tokens_no_cache", "usage_input_tokens_cache_write_5m",
            "usage_input_tokens_cache_write_1h", "usage_input_tokens_cache_read")),
    _Shape("generic", None, "date", "model", "cost", ("tokens",)),
)  # fmt: skip


def model_key(name: str | None) -> str | None:
    """The name models are matched on: lower case; a display name's spaces and dots become ``-``;
    a trailing snapshot date (``-20250514``, ``-2024-08-06``) or ``-latest`` is dropped. So
    ``Claude Sonnet 4`` and ``claude-sonnet-4-20250514`` meet, as do ``gpt-4o-2024-08-06`` and
    ``gpt-4o``; ``gpt-4o-mini`` stays apart."""
    if name is None or not name.strip():
        return None
    key = name.strip().lower()
    if " " in key:
        key = re.sub(r"[\s.]+", "-", key)
    return _SNAPSHOT.sub("", key)


@dataclass(slots=True)
class SideTotals:
    cost: Decimal | None = None
    tokens: int | None = None
    lines: int = 0  # export rows summed here
    events: int = 0
    unpriced_events: int = 0
    names: set[str] = field(default_factory=set)

    def add(self, cost: Decimal | None, tokens: int | None, name: str | None) -> None:
        if cost is not None:
            self.cost = cost if self.cost is None else MONEY_CONTEXT.add(self.cost, cost)
        if tokens is not None:
            self.tokens = tokens if self.tokens is None else self.tokens + tokens
        if name:
            self.names.add(name)


DayModel = tuple[date, str | None]


@dataclass(frozen=True, slots=True)
class ProviderExport:
    """A provider's export read and summed per (day, :func:`model_key`)."""

    shape: str
    has_cost: bool
    has_tokens: bool
    lines: int  # data rows read
    groups: Mapping[DayModel, SideTotals]

    @property
    def days(self) -> tuple[date, date] | None:
        """First and last day in the export."""
        days = [day for day, _ in self.groups]
        return (min(days), max(days)) if days else None


def _where(line: int, column: str) -> str:
    return f"line {line}, column {column!r}"


def _fail(line: int, column: str | None, message: str) -> InvalidInput:
    place = f"line {line}" if column is None else _where(line, column)
    return InvalidInput(f"{place}: {message}", field="csv")


def _day(raw: str, line: int, column: str) -> date:
    text = raw.strip()
    try:
        if text.isdigit() and len(text) >= 9:  # Unix seconds (OpenAI's start_time)
            moment = datetime.fromtimestamp(int(text), UTC)
        else:
            moment = datetime.fromisoformat(text.removesuffix(" UTC"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise _fail(line, column, f"not a date (YYYY-MM-DD, ISO datetime or Unix seconds): {raw!r}") from None
    if not 2000 <= moment.year < 2200:
        raise _fail(line, column, f"a date between 2000 and 2199 is expected, got {raw!r}")
    return moment.date()


def _tokens(raw: str, line: int, column: str) -> int:
    text = raw.strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise _fail(line, column, f"a whole, non-negative number of tokens is expected, got {raw!r}")
    return int(text)


def in_range(amount: Decimal) -> bool:
    """Under 10^12 in size with at most 30 decimal places (checked without rounding anything)."""
    if amount.copy_abs() >= _MAX_AMOUNT:
        return False
    return amount.quantize(Decimal(1).scaleb(-_PLACES), context=_WIDE) == amount


def _cost(raw: str, line: int, column: str) -> Decimal:
    if not raw.strip():
        raise _fail(line, column, "the amount is empty")
    try:
        # Credits and refunds are negative lines in a bill: they are reconciled like any other.
        amount = Decimal(raw.strip())
    except InvalidOperation:
        raise _fail(line, column, f"not a decimal amount: {raw!r}") from None
    if not amount.is_finite():
        raise _fail(line, column, f"not a decimal amount: {raw!r}")
    if not in_range(amount):
        raise _fail(
            line, column, f"out of range (under 10^12 USD, at most {_PLACES} decimal places): {raw!r}"
        )
    return amount


def _column_map(columns: Mapping[str, str] | str) -> _Shape:
    if isinstance(columns, str):
        pairs: dict[str, str] = {}
        for part in columns.split(","):
            name, sep, header = part.partition("=")
            if not sep or not name.strip() or not header.strip():
                raise InvalidInput(
                    f"expected name=Header pairs separated by commas, got {part!r}", field="columns"
                )
            pairs[name.strip()] = header.strip()
        columns = pairs
    unknown = sorted(set(columns) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown name {unknown[0]!r}; map any of {', '.join(_FIELDS)}", field="columns")
    if "date" not in columns or "model" not in columns or not {"cost", "tokens"} & set(columns):
        raise InvalidInput("map date, model and cost (or tokens) at least", field="columns")
    tokens = (columns["tokens"],) if "tokens" in columns else ()
    return _Shape("generic", None, columns["date"], columns["model"], columns.get("cost"), tokens)


def _detect(header: list[str], provider: str, columns: Mapping[str, str] | str | None) -> _Shape:
    present = set(header)
    if columns is not None:
        shape = _column_map(columns)
        missing = [name for name in shape.needs if name not in present]
        if missing:
            raise _fail(1, missing[0], f"not in the header ({', '.join(header)})")
        return shape
    for shape in SHAPES:
        if shape.provider in (provider, None) and set(shape.needs) <= present:
            return shape
    for shape in SHAPES:
        if set(shape.needs) <= present:
            raise _fail(1, None, f"this is the {shape.name} export, not one of {provider}'s")
    known = "; ".join(f"{s.name}: {', '.join(s.needs)}" for s in SHAPES if s.provider in (provider, None))
    raise _fail(
        1,
        None,
        f"the header ({', '.join(header)}) is no known export ({known}); map its headers with "
        "columns=date=…,model=…,cost=… (CLI: --columns)",
    )


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1  # a quoted cell may run over several lines: name the first
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _fail(start, None, f"not valid CSV ({exc})") from None
        yield start, row


def parse_provider_csv(
    data: str | bytes, provider: str, *, columns: Mapping[str, str] | str | None = None
) -> ProviderExport:
    """Read a provider's export (see the module docs for the shapes). A malformed file is an
    ``InvalidInput`` (``field="csv"``) whose message names the line and the column."""
    provider = provider_name(provider)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"not UTF-8 text (byte {exc.start})", field="csv") from None
    data = data.removeprefix("\ufeff")
    rows = _rows(data)
    first = next(rows, None)
    if first is None or not any(cell.strip() for cell in first[1]):
        raise InvalidInput("the export is empty: a header row is expected first", field="csv")
    header = [cell.strip() for cell in first[1]]
    shape = _detect(header, provider, columns)
    at = {name: i for i, name in reversed(list(enumerate(header)))}
    token_columns = [name for name in shape.tokens if name in at]
    groups: dict[DayModel, SideTotals] = {}
    lines = 0
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue  # blank lines are not data
        if len(row) != len(header):
            raise _fail(line, None, f"{len(row)} cells, but the header has {len(header)}")
        lines += 1
        day = _day(row[at[shape.date]], line, shape.date)
        name = row[at[shape.model]].strip()
        if shape.line_item:
            if not name:
                raise _fail(line, shape.model, "empty: export the costs grouped by line item")
            name = name.split(",", 1)[0].strip()
        if shape.currency is not None and shape.currency in at:
            currency = row[at[shape.currency]].strip()
            if currency and currency.lower() != "usd":
                raise _fail(line, shape.currency, f"only USD is reconciled, got {currency!r}")
        cost = None if shape.cost is None else _cost(row[at[shape.cost]], line, shape.cost)
        tokens = sum(_tokens(row[at[c]], line, c) for c in token_columns) if token_columns else None
        side = groups.setdefault((day, model_key(name)), SideTotals())
        side.add(cost, tokens, name or None)
        side.lines += 1
    return ProviderExport(shape.name, shape.cost is not None, bool(token_columns), lines, groups)


def provider_name(raw: object) -> str:
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not _PROVIDER.match(name):
        raise InvalidInput(
            f"must be a provider name such as openai or anthropic, got {raw!r}", field="provider"
        )
    return name
