"""Budget policies from a TOML file::

[[budget]]
name = "acme-monthly"
scope = "tenant"
key = "acme"                 # omit: every tenant gets its own counter under this policy
period = "month"             # run | hour | day | month | rolling:<seconds> (rolling:1h)
limit = "25.00"              # strings or integers; floats are refused (money is exact)
currency = "USD"             # the only one: calls are priced and reserved in USD
soft = "20.00"
timezone = "Pacific/Auckland"
downgrade = { "gpt-4o" = "gpt-4o-mini", "claude-opus-*" = "claude-haiku-4-5" }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

from outlay._errors import ConfigError, InvalidInput

from ._guards import RunGuards
from ._policy import Budget

__all__ = ["load_policies"]

_FIELDS: Final = frozenset(
    {"name", "scope", "key", "period", "limit", "soft", "currency", "timezone", "downgrade", "shared"}
)
_GUARD_FIELDS: Final = frozenset({"max_calls", "max_identical_calls", "max_cost_per_minute"})


def load_policies(path: str | Path) -> list[Budget]:
    """Read ``[[budget]]`` entries; an error names the file, the entry and the field."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the budgets file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"budget"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level field(s) {', '.join(sorted(unknown))}; expected [[budget]]"
        )
    entries = data.get("budget", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'budget' must be an array of tables ([[budget]])")
    return [_entry(where, index, entry) for index, entry in enumerate(entries)]


def _entry(where: str, index: int, entry: object) -> Budget:
    label = f"budget[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {label}: expected a table")
    if isinstance(entry.get("name"), str):
        label = f"{label} ({entry['name']})"
    unknown = set(entry) - _FIELDS - _GUARD_FIELDS
    if unknown:
        raise ConfigError(f"{where}: {label}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("name", "scope", "key", "period", "currency", "timezone"):
        if name in entry and not isinstance(entry[name], str):
            error = ConfigError(f"{where}: {label}: {name}: expected a string, got {entry[name]!r}")
            error.field = name
            raise error
    if entry.get("currency", "USD") != "USD":
        # outlay.meter, the instrumented SDKs and the gateway price and reserve every call in USD
        # (the catalog's and the ledger's currency): such a budget loaded, then refused every call.
        error = ConfigError(
            f"{where}: {label}: currency: outlay prices and reserves calls in USD only, "
            f"got {entry['currency']!r}"
        )
        error.field = "currency"
        raise error
    guards = {name: entry[name] for name in _GUARD_FIELDS if name in entry}
    kwargs = {name: entry[name] for name in _FIELDS if name in entry}
    try:
        return Budget(**kwargs, guards=RunGuards(**guards) if guards else None)
    except InvalidInput as exc:
        message = str(exc)
        if exc.field == "guards":  # the file has no "guards" field: name the one it has
            first = sorted(guards)[0]
            message = f"{first}: {message.removeprefix('guards: ')}"
            exc.field = first
        error = ConfigError(f"{where}: {label}: {message}")
        error.field = exc.field
        raise error from None
