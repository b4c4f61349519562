from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

def configure(
    time_us: Callable[..., int],
    day_of: Callable[[int], str],
    encode_event: Callable[..., bytes],
    cost_event: type,
    usage: type,
    acc: type,
    run_acc: type,
    link: Callable[..., None],
    add: Callable[[Decimal, Decimal], Decimal],
    several_tenants: str,
) -> None: ...
def event_rows(
    events: Sequence[Any],
    payloads: Sequence[bytes] | None,
    first: dict[str, int],
    deltas: Any,
    raw: bool = ...,
) -> list[tuple[Any, ...]]: ...
def configure_sqlite(
    version: int,
    connection: type,
    integrity_error: type,
    operational_error: type,
    database_error: type,
    data_error: type,
    programming_error: type,
    internal_error: type,
) -> bool: ...
def in_transaction(connection: Any) -> bool: ...
def insert_rows(connection: Any, sql: str, rows: list[tuple[Any, ...]]) -> int: ...
def register_dadd(connection: Any, fallback: Callable[[Any, Any], str | None]) -> None: ...
def append_held(fd: int, data: bytes, /) -> int: ...
def register_dsum(connection: Any, aggregate: type, /) -> None: ...
