"""``outlay serve``: the gateway and the reporting API in one process, on one embedded ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from outlay.cli._serve import assemble
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
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nname = "monthly"\nscope = "tenant"\nlimit = "50.00"\nperiod = "month"\n')
    settings = load_settings(_config(tmp_path, f'budgets = "{budgets}"\n'))
    secret = _new_key(tmp_path, "--budget", "25.00/month")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"name": "f", "token": ADMIN, "role": "admin"}]))
    app, with_api = assemble(settings, str(tokens))  # exactly what `outlay serve` runs
    assert with_api
    with LiveServer(app, lifespan="on") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        admin = {"Authorization": f"Bearer {ADMIN}"}
        answer = httpx.get(
            server.url + "/api/v1/tenants", params={"from": "2000-01-01", "to": "2100-01-01"}, headers=admin
        )
        status = httpx.get(server.url + "/api/v1/budgets/status", params={"tenant": "acme"}, headers=admin)
        assert httpx.get(server.url + "/openapi.json").status_code == 200
    # The API reports the gateway's own counters: the file's policy and the key's budget, both
    # charged with the call just made.
    assert status.status_code == 200, status.text
    rows = {(row["source"], row["name"] or ""): row for row in status.json()["rows"]}
    assert {source for source, _ in rows} == {"policies", "key"}
    assert all(Decimal(row["spent"]) > 0 and Decimal(row["reserved"]) == 0 for row in rows.values())
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"] if isinstance(answer.json(), dict) else answer.json()
    [row] = [r for r in rows if r["tenant"] == "acme"]
    assert row["events"] == 1
    assert row["cost"] is not None


def test_the_start_up_line_names_the_default_ledger_not_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ``ledger =`` and no OUTLAY_URL, ``outlay serve`` said "(ledger: None)"; it names the
    ledger the gateway actually writes (./.outlay/outlay.db)."""
    from outlay.cli._serve import _ledger_shown

    for name in ("OUTLAY_URL", "OUTLAY_LEDGER_URL", "OUTLAY_KEYS_URL", "OUTLAY_BUDGET_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None)
    assert settings.ledger is None
    app, _ = assemble(settings, None)
    assert _ledger_shown(app, settings) == str(Path(".outlay") / "outlay.db")
    configured = load_settings(_config(tmp_path))
    app, _ = assemble(configured, None)
    assert _ledger_shown(app, configured) == str(tmp_path / "outlay.db")
