"""``open_budget_store``: a budget store from a URL, as configuration names it (``OUTLAY_BUDGET_URL``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from outlay._errors import ConfigError
from outlay._urls import refuse_url_like_path

from ._sqlite import SQLiteBudgetStore
from ._store import BudgetStore, InMemoryBudgetStore

__all__ = ["open_budget_store"]


def open_budget_store(url: str | None = None) -> BudgetStore:
    """Open the budget store named by ``url``, else ``$OUTLAY_BUDGET_URL``, else an in-memory one.

    - ``memory://``: a new :class:`InMemoryBudgetStore` (this process only);
    - ``sqlite:///abs/path.db``, ``sqlite:rel/path.db`` or a plain path: :class:`SQLiteBudgetStore`;
    - ``redis://host:6379/0?on_unavailable=allow&local_cap=5.00&prefix=outlay:budgets:`` (also
      ``rediss://``, ``unix://``): :class:`RedisBudgetStore`, shared by every replica (needs
      ``outlay[redis]``); ``timeout`` and ``retry_interval`` are seconds.
    """
    target = url or os.environ.get("OUTLAY_BUDGET_URL") or "memory://"
    if target in ("memory://", "memory:"):
        return InMemoryBudgetStore()
    if target.startswith(("redis://", "rediss://", "unix://")):
        return _open_redis(target)
    if target.startswith("sqlite:"):
        target = target.removeprefix("sqlite:")
        target = target[2:] if target.startswith("//") else target
    elif "://" in target:
        raise ConfigError(
            f"unsupported budget store URL {target!r}; use memory://, a path, sqlite:PATH or redis://",
            field="budget_store",
        )
    else:
        refuse_url_like_path(
            target, field="budget_store", expected="memory://, a path, sqlite:PATH or redis://"
        )
    return SQLiteBudgetStore(Path(target).expanduser())


def _open_redis(url: str) -> BudgetStore:
    from ._redis import _OUTLAY_OPTIONS, RedisBudgetStore

    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OUTLAY_OPTIONS:
            ours[name] = value
        else:
            rest.append((name, value))
    connection = urlunsplit(parts._replace(query=urlencode(rest)))
    seconds = {"timeout": 1.0, "retry_interval": 1.0}
    for name in seconds:
        if name in ours:
            try:
                seconds[name] = float(ours[name])
            except ValueError:
                raise ConfigError(f"expected seconds, got {ours[name]!r}", field=name) from None
    mode = ours.get("on_unavailable", "deny")
    if mode not in ("deny", "allow"):
        raise ConfigError(f"expected deny or allow, got {mode!r}", field="on_unavailable")
    return RedisBudgetStore(
        connection,
        prefix=ours.get("prefix", "outlay:budgets:"),
        on_unavailable="allow" if mode == "allow" else "deny",
        local_cap=ours.get("local_cap", "0"),
        timeout=seconds["timeout"],
        retry_interval=seconds["retry_interval"],
    )
