"""Subjects and message ids of the NATS event log (pure functions: no server needed)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from outlay.stream._nats_route import INVALID_TOKEN, UNATTRIBUTED_TOKEN, route, token

from ._nats_helpers import encoded, make_event

# A NATS subject token (and a durable consumer name): no '.', '*', '>', whitespace or slashes.
VALID_TOKEN = re.compile(r"[A-Za-z0-9_%-]{1,128}")


@given(st.text(max_size=300))
def test_every_text_becomes_a_valid_token(text: str) -> None:
    assert VALID_TOKEN.fullmatch(token(text))


@given(st.text(max_size=100), st.text(max_size=100))
def test_different_texts_never_share_a_token(a: str, b: str) -> None:
    if a != b:
        assert token(a) != token(b)


def test_plain_names_are_kept_and_outlay_tokens_cannot_be_forged() -> None:
    assert token("acme-corp_01") == "acme-corp_01"
    assert token("a.b") == "a%2Eb"
    assert token(UNATTRIBUTED_TOKEN) != UNATTRIBUTED_TOKEN
    assert token(INVALID_TOKEN) != INVALID_TOKEN
    assert token("").startswith("_h")
    assert token("x" * 500).startswith("_h")


def test_route_reads_environment_tenant_and_id() -> None:
    event = make_event(1, tenant="globex", environment="staging")
    out = route(encoded(event), "p")
    assert (out.subject, out.msg_id) == ("p.staging.globex", event.event_id)
    assert route(encoded(make_event(2, tenant=None)), "p").subject == f"p.production.{UNATTRIBUTED_TOKEN}"


def test_what_is_not_an_event_is_routed_to_invalid_with_a_fresh_id() -> None:
    bad = [
        b"",
        b"[1, 2]",
        b'{"type": "dev.outlay.cost.v1", "id": "has space", "data": {}}',
        b'{"type": "dev.outlay.cost.v1", "id": "x\\r\\nInjected: 1", "data": {}}',
        b'{"type": "dev.outlay.cost.v1", "id": "ok", "data": {"tenant_id": 7}}',
        b"\xff\xfe",
    ]
    routed = [route(payload, "p") for payload in bad]
    assert {r.subject for r in routed} == {f"p.{INVALID_TOKEN}"}
    assert len({r.msg_id for r in routed}) == len(bad)
    assert [r.payload for r in routed] == bad
