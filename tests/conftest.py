"""Shared test fixtures.

Tests that need a real service (PostgreSQL, Redis, NATS on loopback) call :func:`require_service`.
On a developer's machine without the service they skip with the reason; with
``OUTLAY_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "nats": ("127.0.0.1", 4222),
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip (or, when OUTLAY_REQUIRE_SERVICES=1, fail) unless service ``name`` answers on loopback."""
    host, port = SERVICES[name]
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OUTLAY_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> str:
    require_service("postgres")
    return os.environ.get("OUTLAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def redis_url() -> str:
    require_service("redis")
    return os.environ.get("OUTLAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def nats_url() -> str:
    require_service("nats")
    return os.environ.get("OUTLAY_TEST_NATS", "nats://127.0.0.1:4222")
