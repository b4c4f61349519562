"""Parquet encoding of the exports: typed columns, money as exact ``decimal128(38, 24)``.

Why scale 24: the ledger keeps costs exact at any scale (TEXT in SQLite, NUMERIC in PostgreSQL).
Published prices carry up to 18 decimal places per million tokens (genai-prices), i.e. 24 places
per token, and a cost is a whole count times such a price — so 24 places hold every catalog-rated
cost exactly, and 38 digits leave 14 for whole dollars. A value that does not fit (an ingested or
overridden cost with more places, or ≥ 10^14 USD) is refused with :class:`Unrepresentable`, never
rounded: the CSV export keeps every digit. pyarrow is an optional extra, imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Context, Decimal
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput

__all__ = ["MEDIA_TYPE", "MONEY_PRECISION", "MONEY_SCALE", "MissingExtra", "Unrepresentable", "parquet_bytes"]

MEDIA_TYPE: Final = "application/vnd.apache.parquet"
MONEY_PRECISION: Final = 38
MONEY_SCALE: Final = 24
_LIMIT: Final = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)
_QUANTUM: Final = Decimal(1).scaleb(-MONEY_SCALE)
_EXACT: Final = Context(prec=60)  # wide enough to rescale any value below _LIMIT; equality checks it
_BATCH: Final = 65_536  # rows per row group: bounds the memory of the Python -> Arrow conversion

#: Column kinds; any column not named here is a string.
MONEY: Final = "money"
INTEGER: Final = "integer"
BOOLEAN: Final = "boolean"
INSTANT: Final = "instant"


class MissingExtra(ConfigError):
    """pyarrow is not installed (``pip install 'outlay[parquet]'``); the API answers 501."""


class Unrepresentable(InvalidInput):
    """A money value has more than :data:`MONEY_SCALE` decimal places or is too large; the API
    answers 422 (the request is fine, the format cannot carry the value)."""


def _arrow() -> tuple[Any, Any]:
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise MissingExtra(
            "Parquet export needs pyarrow, which is not installed: pip install 'outlay[parquet]' "
            "(or use the CSV export)",
            field="format",
        ) from None


def _money(value: Any, column: str, row: Mapping[str, Any]) -> Decimal | None:
    if value is None:
        return None
    amount = Decimal(value)  # the exports carry exact decimal text
    exact = amount.quantize(_QUANTUM, context=_EXACT) if amount.copy_abs() < _LIMIT else None
    if exact is None or exact != amount:
        what = (
            f"event {row['event_id']}"
            if "event_id" in row
            else "the line " + "/".join(str(row.get(k)) for k in ("feature", "operation", "model"))
        )
        raise Unrepresentable(
            f"{what} has {column} {value}, which Parquet decimal128({MONEY_PRECISION}, {MONEY_SCALE}) "
            f"cannot hold exactly (more than {MONEY_SCALE} decimal places, or {_LIMIT:,} USD or more); "
            "it is not rounded: use the CSV export, which keeps every digit",
            field=column,
        )
    return exact


def _value(kind: str, value: Any, column: str, row: Mapping[str, Any]) -> Any:
    if value is None or value == "":
        return None
    if kind == MONEY:
        return _money(value, column, row)
    if kind == INSTANT:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if kind in (INTEGER, BOOLEAN):
        return value
    return str(value)


def parquet_bytes(
    columns: Sequence[str],
    kinds: Mapping[str, str],
    rows: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, str],
) -> bytes:
    """A Parquet file of ``rows`` with ``columns`` (typed by ``kinds``) and file ``metadata``.
    Raises :class:`MissingExtra` without pyarrow, :class:`Unrepresentable` for money that does
    not fit exactly."""
    pa, pq = _arrow()
    types = {
        MONEY: pa.decimal128(MONEY_PRECISION, MONEY_SCALE),
        INTEGER: pa.int64(),
        BOOLEAN: pa.bool_(),
        INSTANT: pa.timestamp("us", tz="UTC"),
    }
    meta = {**metadata, "outlay.money": f"decimal128({MONEY_PRECISION},{MONEY_SCALE}) USD, exact"}
    schema = pa.schema(
        [pa.field(c, types.get(kinds.get(c, ""), pa.string())) for c in columns],
        metadata={k.encode(): v.encode() for k, v in meta.items()},
    )
    sink = pa.BufferOutputStream()

    def arrays(batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [
            pa.array([_value(kinds.get(c, ""), r.get(c), c, r) for r in batch], type=field.type)
            for c, field in zip(columns, schema, strict=True)
        ]

    with pq.ParquetWriter(sink, schema) as writer:
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == _BATCH:
                writer.write_batch(pa.record_batch(arrays(batch), schema=schema))
                batch = []
        if batch:
            writer.write_batch(pa.record_batch(arrays(batch), schema=schema))
    return bytes(sink.getvalue().to_pybytes())
