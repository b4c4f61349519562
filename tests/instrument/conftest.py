"""A fake provider on a real uvicorn server (shared by a module) and a fresh in-memory pipeline and
budget engine per test; the official SDKs talk to the fake through outlay's metering transport."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anthropic
import openai
import pytest

import outlay
from outlay import budgets
from outlay.budgets import BudgetEngine, InMemoryBudgetStore
from outlay.events import CostEvent
from outlay.instrument import anthropic_client, openai_client
from outlay.testing import FakeProvider, LiveServer, ModelBehaviour

# genai-prices list prices (USD per million tokens) the expected costs below are computed from.
PER_MTOK = {
    "gpt-4o": (Decimal("2.5"), Decimal("10")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.6")),
    "claude-haiku-4-5": (Decimal("1"), Decimal("5")),
    "gemini-2.0-flash": (Decimal("0.1"), Decimal("0.4")),
}


def expected_cost(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    per_in, per_out = PER_MTOK[model]
    return (per_in * input_tokens + per_out * output_tokens) / 1_000_000


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider(behaviours={"claude-*": ModelBehaviour(output_tokens=12)}, chunks=6)
    with LiveServer(provider) as server:
        provider.url = server.url  # type: ignore[attr-defined]
        yield provider
        provider.close()


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def base_url(fake: FakeProvider) -> str:
    url: str = fake.url  # type: ignore[attr-defined]
    return url


@pytest.fixture
def pipeline() -> Iterator[outlay.Outlay]:
    instance = outlay.Outlay("memory://")
    yield instance
    instance.close()


@pytest.fixture
def engine() -> Iterator[BudgetEngine]:
    """A fresh engine, also the process default for the test (``outlay.run(budget=...)`` uses it)."""
    previous = budgets.get_engine()
    fresh = budgets.configure(BudgetEngine(InMemoryBudgetStore()))
    yield fresh
    budgets.configure(previous)


def events(pipeline: outlay.Outlay) -> list[CostEvent]:
    """Every cost event the pipeline's ledger holds, oldest first (the writer catches up first)."""
    pipeline.catch_up()
    now = datetime.now(UTC)
    found = [
        entry.event for entry in pipeline.ledger.entries(now - timedelta(hours=1), now + timedelta(hours=1))
    ]
    return [event for event in found if not event.operation.startswith("decision:")]


@pytest.fixture
def openai_sdk(base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine) -> Iterator[openai.OpenAI]:
    """The official openai client, metered into ``pipeline`` under ``engine``, closed afterwards."""
    with openai_client(
        outlay=pipeline, budgets=engine, base_url=base_url + "/v1", api_key="sk-test"
    ) as client:
        yield client


@pytest.fixture
def anthropic_sdk(
    base_url: str, pipeline: outlay.Outlay, engine: BudgetEngine
) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(outlay=pipeline, budgets=engine, base_url=base_url, api_key="sk-test") as client:
        yield client
