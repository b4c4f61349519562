"""``outlay serve``: the gateway and the reporting API in one process, on one embedded ledger."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from outlay._runtime import Outlay
from outlay._serve import CombinedApp
from outlay.api import create_app as create_api
from outlay.gateway import create_app as create_gateway
from outlay.gateway import load_settings
from outlay.testing import FakeProvider, LiveServer

from .test_server import _config, _env, _new_key

ADMIN = "admin-token-0123456789"


def test_a_call_through_the_gateway_shows_in_the_api_of_the_same_process(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.reset()
    for name, value in _env(fake.url).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_config(tmp_path))
    secret = _new_key(tmp_path)
    reporting = Outlay(settings.ledger)
    app = CombinedApp(
        create_gateway(settings),
        create_api(reporting, tokens=[{"name": "f", "token": ADMIN, "role": "admin"}]),
    )
    with LiveServer(app, lifespan="on") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        answer = httpx.get(
            server.url + "/api/v1/tenants",
            params={"from": "2000-01-01", "to": "2100-01-01"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert httpx.get(server.url + "/openapi.json").status_code == 200
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"] if isinstance(answer.json(), dict) else answer.json()
    [row] = [r for r in rows if r["tenant"] == "acme"]
    assert row["events"] == 1
    assert row["cost"] is not None
    reporting.close()
