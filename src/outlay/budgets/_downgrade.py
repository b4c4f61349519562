"""The downgrade map: ``{"gpt-4o": "gpt-4o-mini", "gpt-4.1-20*": "gpt-4.1-mini-20*"}``.

Exact names win over globs; globs are tried in the order given. ``*`` matches any run of
characters and what it matched is carried over to the ``*`` of the replacement, in order, so
``gpt-4.1-2025-04-14`` becomes ``gpt-4.1-mini-2025-04-14``. A map is applied once (no chains), so
``{"a": "b", "b": "a"}`` cannot loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from outlay._errors import InvalidInput

__all__ = ["DowngradeMap"]


class DowngradeMap:
    """A validated downgrade map; :meth:`apply` answers the model to use instead, if any."""

    __slots__ = ("_exact", "_globs")

    def __init__(self, mapping: Mapping[str, str], *, field: str = "downgrade") -> None:
        if not isinstance(mapping, Mapping):
            raise InvalidInput("expected a mapping of model -> cheaper model", field=field)
        self._exact: dict[str, str] = {}
        self._globs: list[tuple[re.Pattern[str], list[str]]] = []
        for source, target in mapping.items():
            where = f"{field}[{source!r}]"
            if not isinstance(source, str) or not source or not isinstance(target, str) or not target:
                raise InvalidInput("model names must be non-empty strings", field=where)
            stars = source.count("*")
            if target.count("*") > stars:
                raise InvalidInput(
                    f"{target!r} has more '*' than {source!r}: each '*' must carry over a matched part",
                    field=where,
                )
            if stars == 0:
                self._exact[source] = target
                continue
            pattern = "(.*?)".join(re.escape(part) for part in source.split("*"))
            self._globs.append((re.compile(pattern), target.split("*")))

    def apply(self, model: str) -> str | None:
        """The replacement for ``model``, or ``None`` when the map does not mention it."""
        if model in self._exact:
            return self._exact[model]
        for pattern, parts in self._globs:
            match = pattern.fullmatch(model)
            if match is None:
                continue
            groups = match.groups()
            out = [parts[0]]
            for index, part in enumerate(parts[1:]):
                out.append(groups[index])
                out.append(part)
            return "".join(out)
        return None
