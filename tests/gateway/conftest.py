"""A fake provider and the gateway, each on a real uvicorn server in a thread, shared by a module.

Per test, the fake's recorded requests and faults are reset and the gateway gets fresh in-memory
hooks, so tests stay independent while paying for the servers once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from outlay._runtime import Outlay
from outlay._usage import Usage
from outlay.budgets import BudgetEngine
from outlay.events import CostEvent
from outlay.gateway import Gateway, GatewayConfig, InMemoryHooks, OutlayHooks, Principal, Route, Upstream
from outlay.keys import InMemoryKeyStore, VirtualKey
from outlay.testing import FakeProvider, LiveServer, ModelBehaviour

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEY = "vk-acme-client-key"
OTHER_KEY = "vk-globex-client-key"
PER_TOKEN = Decimal("0.000001")


def price(model: str, usage: Usage) -> Decimal:
    """A toy price: one micro-dollar per token, exact."""
    return PER_TOKEN * (usage.input_tokens + usage.output_tokens)


def make_hooks(**kwargs: object) -> InMemoryHooks:
    keys = {CLIENT_KEY: Principal("acme", key_id="k1"), OTHER_KEY: Principal("globex", key_id="k2")}
    kwargs.setdefault("price", price)
    return InMemoryHooks(keys, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider(
        api_key=UPSTREAM_KEY,
        behaviours={
            "claude-*": ModelBehaviour(output_tokens=12, cached_tokens=6, cache_write_tokens=4),
            "o4-*": ModelBehaviour(output_tokens=20, reasoning_tokens=8, cached_tokens=3),
        },
    )
    with LiveServer(provider) as server:
        provider.url = server.url  # type: ignore[attr-defined]
        yield provider
        provider.close()


def gateway_config(fake_url: str, **overrides: object) -> GatewayConfig:
    env = {
        "OUTLAY_UPSTREAM_OPENAI": fake_url + "/v1",
        "OUTLAY_UPSTREAM_ANTHROPIC": fake_url,
        "OUTLAY_UPSTREAM_GEMINI": fake_url + "/v1beta/openai",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "GEMINI_API_KEY": UPSTREAM_KEY,
    }
    base = GatewayConfig.from_env(
        env,
        extra_upstreams=[Upstream("local", "openai_compatible", fake_url + "/v1", UPSTREAM_KEY)],
        routes=[Route("llama-*", "local")],
        aliases={"fast": "gpt-4o-mini", "haiku": "anthropic/claude-haiku-4-5"},
    )
    # Short read timeouts so a hanging upstream becomes a 504 quickly.
    upstreams = {name: replace(u, timeout=1.5) for name, u in base.upstreams.items()}
    return replace(base, upstreams=upstreams, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(fake: FakeProvider) -> Iterator[Gateway]:
    app = Gateway(gateway_config(fake.url, max_body_bytes=64 * 1024), hooks=make_hooks(), trust_env=False)  # type: ignore[attr-defined]
    with LiveServer(app, lifespan="on") as server:
        app.url = server.url  # type: ignore[attr-defined]
        yield app


@pytest.fixture
def hooks(gateway: Gateway, fake: FakeProvider) -> InMemoryHooks:
    fake.reset()
    fresh = make_hooks()
    gateway.hooks = fresh
    return fresh


@pytest.fixture
def gw_url(gateway: Gateway, hooks: InMemoryHooks) -> str:
    return gateway.url  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def oai(gw_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=gw_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture
def claude(gw_url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=gw_url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield client
    client.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for work the server finishes after the client has its answer (settlement of a stream)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- the real hooks: virtual keys, budgets and the ledger --------------------------------------------


@dataclass
class Stack:
    """The gateway wired with :class:`OutlayHooks` over fresh in-memory keys, budgets and ledger."""

    url: str
    outlay: Outlay
    keys: InMemoryKeyStore
    engine: BudgetEngine
    hooks: OutlayHooks
    key: VirtualKey
    secret: str  # a key of tenant acme
    clients: list[openai.OpenAI | anthropic.Anthropic] = field(default_factory=list)

    def events(self) -> list[CostEvent]:
        """Every event in the ledger (the embedded writer catches up first)."""
        self.outlay.catch_up()
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        return [entry.event for entry in self.outlay.ledger.entries(start, end)]

    def wait_events(self, count: int) -> list[CostEvent]:
        wait_for(lambda: len(self.events()) >= count)
        return self.events()

    def openai(self, secret: str | None = None, **headers: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=self.url + "/v1", api_key=secret or self.secret, max_retries=0, timeout=10,
            default_headers=headers or None,
        )  # fmt: skip
        self.clients.append(client)
        return client

    def anthropic(self, secret: str | None = None, **headers: str) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.url, api_key=secret or self.secret, max_retries=0, timeout=10,
            default_headers=headers or None,
        )  # fmt: skip
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.outlay.close()


def make_stack(url: str, **hook_options: Any) -> Stack:
    ol = Outlay("memory://")
    store = InMemoryKeyStore()
    engine = hook_options.pop("engine", None) or BudgetEngine()
    hooks = OutlayHooks(store, outlay=ol, engine=engine, cache_ttl=0, **hook_options)
    key, secret = store.create("acme", name="acme-default")
    return Stack(url, ol, store, engine, hooks, key, secret)


@pytest.fixture
def stack(gateway: Gateway, fake: FakeProvider) -> Iterator[Stack]:
    fake.reset()
    built = make_stack(gateway.url)  # type: ignore[attr-defined]
    gateway.hooks = built.hooks
    yield built
    built.close()
