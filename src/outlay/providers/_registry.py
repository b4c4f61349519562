"""Provider ids, the wire format each one speaks, and the APIs each format has.

Built in: ``openai``, ``anthropic``, ``google`` (alias ``gemini``). Users declare more with
:func:`declare_provider` — a self-hosted vLLM or any other server that speaks one of those formats —
so usage extraction and attribution use the name they bill under.
"""

from __future__ import annotations

import re
import threading

from outlay._errors import InvalidInput

__all__ = ["APIS", "declare_provider", "normalize_api", "normalize_provider", "wire_format"]

_BUILTIN = ("openai", "anthropic", "google")
_ALIASES = {"gemini": "google"}
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

#: The APIs each wire format has (``None``, "detect it", is always accepted too).
APIS: dict[str, tuple[str, ...]] = {
    "openai": ("chat", "completions", "responses", "embeddings"),
    "anthropic": ("messages",),
    "google": ("generate_content",),
}

# id -> wire format. Reads are plain dict lookups (atomic under the GIL); writes take the lock so two
# threads declaring the same name cannot both think they won with different formats.
_formats: dict[str, str] = {name: name for name in _BUILTIN}
_lock = threading.Lock()


def _known() -> str:
    names = sorted(_formats) + [f"{alias} (= {target})" for alias, target in _ALIASES.items()]
    return ", ".join(names)


def normalize_provider(name: str) -> str:
    """The canonical provider id for ``name`` (case-insensitive; ``gemini`` -> ``google``)."""
    if name in _formats:  # fast path: already canonical
        return name
    if not isinstance(name, str):
        raise InvalidInput(f"must be a string, got {type(name).__name__}", field="provider")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _formats:
        return key
    raise InvalidInput(
        f"unknown provider {name!r}; known: {_known()}"
        " (declare others with declare_provider(name, like=...))",
        field="provider",
    )


def wire_format(provider: str) -> str:
    """The wire format (``openai``, ``anthropic`` or ``google``) a provider id speaks."""
    return _formats[normalize_provider(provider)]


def normalize_api(fmt: str, api: str | None) -> str | None:
    if api is None or api in APIS[fmt]:
        return api
    raise InvalidInput(
        f"{api!r} is not an API of the {fmt} format; use one of: {', '.join(APIS[fmt])} (or None to detect)",
        field="api",
    )


def declare_provider(name: str, like: str = "openai") -> str:
    """Declare provider ``name`` speaking the same wire format as ``like``; returns its id.

    Declaring the same name with the same format again is a no-op; with another format it is an
    error (events already recorded under that name would change meaning).
    """
    if not isinstance(name, str) or not _NAME.match(key := name.strip().lower()):
        raise InvalidInput(
            f"provider name {name!r} must match {_NAME.pattern} (lower case letters, digits, _ . -)",
            field="name",
        )
    fmt = wire_format(like) if isinstance(like, str) else None
    if fmt is None:
        raise InvalidInput(f"must be a provider name, got {type(like).__name__}", field="like")
    if key in _ALIASES or key in _BUILTIN:
        raise InvalidInput(f"{key!r} is a built-in provider and cannot be redeclared", field="name")
    with _lock:
        current = _formats.get(key)
        if current is not None and current != fmt:
            raise InvalidInput(
                f"provider {key!r} is already declared with the {current} format, not {fmt}", field="like"
            )
        _formats[key] = fmt
    return key
