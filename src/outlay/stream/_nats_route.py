"""Where an encoded event goes on NATS: its subject and its deduplication id (``Nats-Msg-Id``).

Subjects are ``<prefix>.<environment>.<tenant>``, so operators can subscribe to one environment or
one tenant (``outlay.events.production.acme``, ``outlay.events.*._unattributed``). Each part is
made a valid subject token by :func:`token`. Routing parses the JSON cheaply and never validates the
event: a payload that is not a cost event is still appended (the ledger writer rejects it and
reports why), under ``<prefix>._invalid``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from typing import Final, NamedTuple

import orjson

from outlay.events import CLOUDEVENT_TYPE

__all__ = ["INVALID_TOKEN", "UNATTRIBUTED_TOKEN", "Outgoing", "durable_name", "route", "token"]

#: Tokens that start with ``_`` are outlay's own; a tenant named ``_invalid`` is escaped to ``%5Finvalid``.
UNATTRIBUTED_TOKEN: Final = "_unattributed"
INVALID_TOKEN: Final = "_invalid"

_MAX_TOKEN: Final = 128
_PLAIN: Final = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]{0,127}")
_PLAIN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# A message id travels in a header line: printable ASCII without spaces, bounded.
_MSG_ID: Final = re.compile(r"[!-~]{1,200}")
# The event's own default (``CostEvent.environment``) when the field is absent.
_DEFAULT_ENVIRONMENT: Final = "production"


class Outgoing(NamedTuple):
    """One payload ready to publish: subject, ``Nats-Msg-Id`` and the bytes themselves."""

    subject: str
    msg_id: str
    payload: bytes


@functools.lru_cache(maxsize=65_536)  # tenants and environments repeat: route() is on the hot path
def token(text: str) -> str:
    """``text`` as one valid NATS subject token (also a valid durable consumer name).

    Letters, digits, ``-`` and ``_`` are kept; any other character becomes ``%XX`` per UTF-8 byte
    (so ``a.b`` -> ``a%2Eb``), and a leading ``_`` becomes ``%5F``. The mapping is one-to-one, so
    two tenants never share a subject. An empty or very long result is replaced by ``_h`` and a
    SHA-256 prefix (subjects and consumer directories must stay short).
    """
    if _PLAIN.fullmatch(text):
        return text
    raw = text.encode("utf-8", "surrogatepass")
    escaped = "".join(
        chr(b) if chr(b) in _PLAIN_CHARS and not (i == 0 and b == 0x5F) else f"%{b:02X}"
        for i, b in enumerate(raw)
    )
    if not escaped or len(escaped) > _MAX_TOKEN:
        return "_h" + hashlib.sha256(raw).hexdigest()[:40]
    return escaped


def durable_name(consumer: str) -> str:
    """The JetStream durable consumer name of ``consumer``: its :func:`token` when that has no
    ``%`` (a plain name, or a long one hashed), else ``_x`` and the hex of its UTF-8 bytes (or
    ``_h`` and a SHA-256 prefix when that is too long). nats-server builds each message's ack
    subject with Go's ``Sprintf`` and the consumer name inside the format: a ``%2E`` there came out
    as ``%!E(uint64=...)``, a reply subject with a space that broke the client's connection, so a
    consumer named ``a.b`` never received a record. One-to-one: plain names never start with ``_``.
    """
    name = token(consumer)
    if "%" not in name:
        return name
    raw = consumer.encode("utf-8", "surrogatepass")
    hexed = "_x" + raw.hex()
    return hexed if len(hexed) <= _MAX_TOKEN else "_h" + hashlib.sha256(raw).hexdigest()[:40]


def _invalid(payload: bytes, prefix: str) -> Outgoing:
    # A fresh id still makes this log's own re-sends (spool drain after a lost PubAck) idempotent,
    # while two appends of the same bytes stay two records, as in every other EventLog.
    return Outgoing(f"{prefix}.{INVALID_TOKEN}", f"invalid-{uuid.uuid4().hex}", payload)


def route(payload: bytes, prefix: str) -> Outgoing:
    """The subject and message id of one encoded event (``_invalid`` when it is not one)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _invalid(payload, prefix)
    if not isinstance(doc, dict) or doc.get("type") != CLOUDEVENT_TYPE:
        return _invalid(payload, prefix)
    event_id = doc.get("id")
    data = doc.get("data")
    if not isinstance(event_id, str) or not _MSG_ID.fullmatch(event_id) or not isinstance(data, dict):
        return _invalid(payload, prefix)
    environment = data.get("environment", _DEFAULT_ENVIRONMENT)
    tenant = data.get("tenant_id")
    if not isinstance(environment, str) or not (tenant is None or isinstance(tenant, str)):
        return _invalid(payload, prefix)
    tenant_token = UNATTRIBUTED_TOKEN if tenant is None else token(tenant)
    return Outgoing(f"{prefix}.{token(environment)}.{tenant_token}", event_id, payload)
