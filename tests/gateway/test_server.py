"""``outlay gateway``: configuration, the app factory, workers, graceful shutdown, missing extra."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from outlay._errors import ConfigError
from outlay._runtime import Outlay
from outlay.cli._gateway import gateway, keys
from outlay.gateway import Gateway, OutlayHooks, app_from_env, create_app, load_settings
from outlay.testing import FakeProvider, LiveServer

from .conftest import UPSTREAM_KEY

MESSAGES = [{"role": "user", "content": "hello"}]


def _env(fake_url: str) -> dict[str, str]:
    return {
        "OUTLAY_UPSTREAM_OPENAI": fake_url + "/v1",
        "OUTLAY_UPSTREAM_ANTHROPIC": fake_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
    }


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'keys = "{tmp_path / "keys.db"}"\n'
        f'ledger = "{tmp_path / "outlay.db"}"\n'
        "cache_ttl = 0\n"
        'aliases = { fast = "gpt-4o-mini" }\n' + extra
    )
    return path


def _new_key(tmp_path: Path, *args: str) -> str:
    result = CliRunner().invoke(
        keys, ["create", "--tenant", "acme", "--keys", str(tmp_path / "keys.db"), *args]
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = _config(tmp_path, 'rate_limit = { rate = "5.00", per = 60 }\nenvironment = "staging"\n')
    settings = load_settings(path, {"OUTLAY_BUDGET_URL": "memory://", "OUTLAY_KEYS_URL": "memory://"})
    assert settings.keys == str(tmp_path / "keys.db")  # the file wins over the environment
    assert settings.budget_store == "memory://"
    assert settings.environment == "staging"
    assert settings.rate_limit is not None and settings.rate_limit.per == 60
    assert settings.routing.resolve("fast") is not None
    assert settings.cap_output is False  # answers are not cut unless asked
    assert load_settings(_config(tmp_path, "cap_output = true\n"), {}).cap_output is True
    assert load_settings(None, {}).budget_store == str(Path(".outlay") / "budgets.db")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour = 1\n", "colour"),
        ('environment = "moon"\n', "environment"),
        ("default_output_tokens = -5\n", "default_output_tokens"),
        ('cap_output = "yes"\n', "cap_output"),
        ("rate_limit = { rate = 1.5 }\n", "rate_limit"),
        ("[upstreams.x]\nbase_url = 'ftp://nope'\n", "upstreams.x"),
        ("not toml ===", "TOML"),
        ("cache_ttl = inf\n", "cache_ttl"),  # a revoked key would work until a restart
        ('unpriced_estimate = "abc"\n', "unpriced_estimate"),
        ('max_body_bytes = "big"\n', "max_body_bytes"),  # not a traceback
        ("max_body_bytes = 2048.9\n", "max_body_bytes"),  # not silently truncated
        ("[upstreams.x]\nbase_url = 'http://x/v1'\nmax_connections = 2.7\n", "upstreams.x"),
        ("[[routes]]\npattern = 5\nupstream = 'openai'\n", "routes[0]"),
    ],
)
def test_bad_config_names_what_is_wrong(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert field in str(caught.value)
    result = CliRunner().invoke(gateway, ["--config", str(path)])
    assert result.exit_code == 2 and field in result.output


def test_a_ledger_named_in_the_file_keeps_the_keys_and_budgets_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'ledger = "{tmp_path / "data" / "outlay.db"}"\n')
    settings = load_settings(path, {})
    assert settings.keys == str(tmp_path / "data" / "keys.db")  # where `outlay api --url` looks
    assert settings.budget_store == str(tmp_path / "data" / "budgets.db")


def test_a_bad_budget_store_in_the_file_is_named_as_the_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('budget_store = "ftp://budgets"\n')
    result = CliRunner().invoke(gateway, ["--config", str(path)])
    assert (
        result.exit_code == 2 and "budget_store" in result.output and "OUTLAY_BUDGET_URL" not in result.output
    )


def test_an_in_memory_budget_store_is_refused_with_several_workers(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('budget_store = "memory://"\n')
    result = CliRunner().invoke(gateway, ["--config", str(path), "--workers", "2", "--port", "0"])
    assert result.exit_code == 2 and "budget_store memory://" in result.output


def test_missing_gateway_extra_is_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if outlay[gateway] were not installed
    result = CliRunner().invoke(gateway, [])
    assert result.exit_code == 1
    assert "pip install 'outlay[gateway]'" in result.output


def test_configured_app_serves_keys_budgets_and_ledger(tmp_path: Path, fake: FakeProvider) -> None:
    fake.reset()
    path = _config(tmp_path)
    secret = _new_key(tmp_path, "--feature", "chat", "--budget", "1.00/month")
    app = create_app(load_settings(path, _env(fake.url)))  # type: ignore[attr-defined]
    assert isinstance(app.hooks, OutlayHooks)
    with LiveServer(app, lifespan="on") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-outlay-cost"] != "unknown"
        remaining = raw.headers["x-outlay-budget-remaining"]
        assert 0 < float(remaining) < 1  # float only to compare in a test; the header is exact text
        key_id = app.hooks.keys.list_keys()[0].id
        CliRunner().invoke(keys, ["revoke", key_id, "--keys", str(tmp_path / "keys.db")])
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]
        client.close()
    # The lifespan shutdown closed the pipeline: a fresh process sees the event.
    home = Outlay(tmp_path / "outlay.db")
    rows = home.reports().breakdown(("tenant", "feature", "model"), "2000-01-01", "2100-01-01")
    home.close()
    assert [(r["tenant"], r["feature"], r["model"], r["events"]) for r in rows] == [
        ("acme", "chat", "gpt-4o-mini", 1)
    ]


def test_app_factory_reads_the_config_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTLAY_GATEWAY_CONFIG", str(_config(tmp_path)))
    app = app_from_env()
    assert isinstance(app, Gateway)
    assert app.config.resolve("fast") is not None
    app.hooks.outlay.close()  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_two_workers_serve_and_shut_down_gracefully(tmp_path: Path, fake: FakeProvider) -> None:
    fake.reset()
    path = _config(tmp_path, 'budget_store = "' + str(tmp_path / "budgets.db") + '"\n')
    secret = _new_key(tmp_path, "--budget", "5/month")
    port = _free_port()
    code = "from outlay.cli._gateway import gateway; gateway()"
    args = [sys.executable, "-c", code, "--port", str(port), "--workers", "2", "--config", str(path)]
    process = subprocess.Popen(args, env={**os.environ, **_env(fake.url)})  # type: ignore[attr-defined]
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/v1/models", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("the gateway did not start") from None
                time.sleep(0.1)
        client = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=10)
        for _ in range(6):
            client.chat.completions.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    home = Outlay(tmp_path / "outlay.db")
    rows = home.reports().breakdown(("tenant",), "2000-01-01", "2100-01-01")
    home.close()
    assert rows[0]["events"] == 6


def test_a_store_that_cannot_open_stops_several_workers_at_start(tmp_path: Path) -> None:
    # Each worker built its own stores: a bad one made every worker print a traceback while the
    # parent went on, serving nothing. It is now built once first, and reported as one line.
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'ledger = "{tmp_path / "outlay.db"}"\n'
        'budget_store = "redis://127.0.0.1:6379/0?on_unavailble=allow"\n'  # a misspelt option
    )
    result = CliRunner().invoke(gateway, ["--config", str(path), "--workers", "2", "--port", "0"])
    assert result.exit_code != 0
    assert "on_unavailble" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
