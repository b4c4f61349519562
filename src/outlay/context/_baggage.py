"""The W3C ``baggage`` header (https://www.w3.org/TR/baggage/) as outlay writes and reads it.

Grammar::

    baggage-string = list-member 0*179( OWS "," OWS list-member )
    list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
    property       = key OWS "=" OWS value / key OWS
    key            = token                      ; RFC 7230
    value          = *baggage-octet             ; printable ASCII but space " , ; \\

outlay's members are ``outlay.<field>=<value>`` and ``outlay.l.<label key>=<value>``. Values are
UTF-8 percent-encoded as the spec asks; label keys are percent-encoded the same way (``%`` is a
token character), so any Unicode key survives the hop exactly. ``outlay.run_path`` holds the run's
ancestors, root first, each percent-encoded (a ``/`` in an id too) and joined by ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes

from outlay._errors import InvalidBaggage, InvalidInput

from ._context import STR_FIELDS, CostContext, default_environment

__all__ = ["MAX_BYTES", "MAX_MEMBERS", "PREFIX", "decode_context", "encode_context", "is_outlay", "parse"]

MAX_BYTES: Final = 8192
MAX_MEMBERS: Final = 180
PREFIX: Final = "outlay."
_LABEL: Final = "outlay.l."
_OWS: Final = " \t"

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE: Final = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# quote() keeps these as they are; everything else (and '%') becomes %XX of its UTF-8 bytes.
_VALUE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\%')
_KEY_SAFE: Final = "!#$&'*+-.^_`|~"
_FIELD_KEYS: Final = {PREFIX + name: name for name in STR_FIELDS}
_RUN_PATH: Final = PREFIX + "run_path"
_ID_SAFE: Final = _VALUE_SAFE.replace("/", "")  # "/" separates the ids of run_path


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def parse(header: str) -> list[tuple[str, str]]:
    """Every list-member of ``header`` as (key, raw value), checked against the grammar and limits.

    Empty list-members (``a=1,,b=2``, as produced by joining headers) are skipped. Raises
    :class:`InvalidBaggage` for anything else the grammar does not allow.
    """
    size = len(header.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise InvalidBaggage(f"the header is {size} bytes; the limit is {MAX_BYTES}", field="baggage")
    members: list[tuple[str, str]] = []
    for position, member in enumerate(header.split(","), start=1):
        if not member.strip(_OWS):
            continue
        pair, *properties = member.split(";")
        key, eq, value = pair.partition("=")
        key, value = key.strip(_OWS), value.strip(_OWS)
        if not eq or not _TOKEN.fullmatch(key) or not _VALUE.fullmatch(value):
            raise InvalidBaggage(
                f"list-member {position} {_shorten(member)} is not key=value with a token key and a "
                "percent-encoded value",
                field="baggage",
            )
        for prop in properties:
            prop_key, _, prop_value = prop.partition("=")
            if not _TOKEN.fullmatch(prop_key.strip(_OWS)) or not _VALUE.fullmatch(prop_value.strip(_OWS)):
                raise InvalidBaggage(
                    f"list-member {position} has a malformed property {_shorten(prop)}", field="baggage"
                )
        members.append((key, value))
    if len(members) > MAX_MEMBERS:
        raise InvalidBaggage(
            f"the header has {len(members)} list-members; the limit is {MAX_MEMBERS}", field="baggage"
        )
    return members


def _decode(key: str, raw: str) -> str:
    if _BAD_PERCENT.search(raw):
        raise InvalidBaggage(f"{key}: '%' must start a %XX escape, got {_shorten(raw)}", field="baggage")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBaggage(
            f"{key}: the escaped bytes are not UTF-8: {_shorten(raw)}", field="baggage"
        ) from None


def is_outlay(key: str) -> bool:
    return key.startswith(PREFIX)


def decode_context(members: Iterable[tuple[str, str]]) -> CostContext | None:
    """The CostContext carried by outlay's members, or ``None`` when there are none.

    Members outside ``outlay.`` are not ours and are ignored; unknown ``outlay.`` keys (from a newer
    sender) are ignored too. A duplicate outlay key is ambiguous and refused.
    """
    fields: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, raw in members:
        if not key.startswith(PREFIX):
            continue
        if key == _RUN_PATH:
            if "run_path" in fields:
                raise InvalidBaggage(f"{key} appears more than once", field="baggage")
            fields["run_path"] = tuple(_decode(key, part) for part in raw.split("/")) if raw else ()
            continue
        if key.startswith(_LABEL):
            label = _decode(key, key[len(_LABEL) :])
            target, name = labels, label
        elif key in _FIELD_KEYS:
            target, name = fields, _FIELD_KEYS[key]
        else:
            continue
        if name in target:
            raise InvalidBaggage(f"{key} appears more than once", field="baggage")
        target[name] = _decode(key, raw)
    if not fields and not labels:
        return None
    fields.setdefault("environment", default_environment())
    try:
        return CostContext(**fields, labels=labels)
    except InvalidInput as error:
        raise InvalidBaggage(f"{PREFIX}{error}", field="baggage") from None


def encode_context(ctx: CostContext) -> list[str]:
    """outlay's list-members for ``ctx``: every field that is set, and every label."""
    try:
        members = [
            f"{PREFIX}{name}={quote(value, safe=_VALUE_SAFE)}"
            for name in STR_FIELDS
            if (value := getattr(ctx, name)) is not None
        ]
        if ctx.run_path:
            members.append(f"{_RUN_PATH}={'/'.join(quote(run, safe=_ID_SAFE) for run in ctx.run_path)}")
        members.extend(
            f"{_LABEL}{quote(key, safe=_KEY_SAFE)}={quote(value, safe=_VALUE_SAFE)}"
            for key, value in ctx.labels.items()
        )
    except UnicodeEncodeError as error:
        # Only a lone surrogate gets here: it has no UTF-8 form, so it cannot cross a process.
        raise InvalidBaggage(
            f"the context holds text with no UTF-8 form ({_shorten(str(error.object))})", field="baggage"
        ) from None
    return members
