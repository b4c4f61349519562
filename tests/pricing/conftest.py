"""Fixtures for pricing tests: instants either side of price changes, and an overrides file."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay.pricing import PriceCatalog

OVERRIDES = """\
[[price]]
provider = "self-hosted"
model = "llama-3.1-70b"
effective_from = 2026-01-01
units = { gpu_seconds = "0.00125" }

[[price]]
provider = "tools"
model = "*"
effective_from = 2025-01-01
units = { calls = "0.005", queries = 0.0004 }

[[price]]
provider = "openai"
model = "gpt-4o"
effective_from = 2026-03-01
effective_to = 2026-09-01
input_mtok = "2.00"
cache_read_mtok = 1
output_mtok = 8.00
"""


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAY_PRICES", raising=False)


@pytest.fixture
def overrides_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDES)
    return path


@pytest.fixture
def catalog(overrides_file: Path) -> PriceCatalog:
    return PriceCatalog.load(overrides_file)


@pytest.fixture
def genai() -> PriceCatalog:
    return PriceCatalog()
