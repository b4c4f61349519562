"""Three `outlay gateway` processes sharing one Redis budget store against one hard limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from outlay._money import money_sum
from outlay._runtime import Outlay
from outlay.testing import FakeProvider

from .test_server import _config, _env, _free_port, _new_key

LIMIT = Decimal("0.02")
MESSAGES = [{"role": "user", "content": "draft the release notes"}]


@pytest.fixture
def replicas(tmp_path: Path, fake: FakeProvider, redis_url: str) -> Iterator[list[str]]:
    fake.reset()
    prefix = f"outlay:test:{uuid.uuid4().hex[:10]}:"
    store = f"{redis_url}?prefix={prefix}"
    path = _config(tmp_path, f'budget_store = "{store}"\n')
    urls, processes = [], []
    code = "from outlay.cli._gateway import gateway; gateway()"
    try:
        for _ in range(3):
            port = _free_port()
            args = [sys.executable, "-c", code, "--port", str(port), "--config", str(path)]
            processes.append(subprocess.Popen(args, env={**os.environ, **_env(fake.url)}))  # type: ignore[attr-defined]
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for url, process in zip(urls, processes, strict=True):
            while True:
                try:
                    httpx.get(url + "/v1/models", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError("a gateway replica did not start") from None
                    time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            # uvicorn drains, then re-raises the SIGTERM it caught: -15 is its graceful exit too.
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


@pytest.mark.slow
async def test_three_gateway_processes_share_one_hard_limit(replicas: list[str], tmp_path: Path) -> None:
    secret = _new_key(tmp_path, "--budget", f"{LIMIT}/month")
    clients = [
        openai.AsyncOpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)
        for url in replicas
    ]

    async def call(i: int) -> tuple[int, Decimal | None]:
        client = clients[i % 3]
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=1000,  # reserved as the worst case: ~0.0006 each, about 30 fit
            )
        except openai.APIStatusError as exc:
            return exc.status_code, None
        return 200, Decimal(raw.headers["x-outlay-cost"])

    answers = await asyncio.gather(*(call(i) for i in range(150)))
    for client in clients:
        await client.close()
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 402}
    admitted = statuses.count(200)
    assert 20 <= admitted < 150  # the limit let calls through on every replica, then refused
    told = money_sum(cost for _, cost in answers if cost is not None)
    assert told <= LIMIT  # the worst case was reserved, so actual <= estimate: overshoot is 0
    home = Outlay(tmp_path / "outlay.db")
    try:
        home.catch_up()
        rows = home.reports().breakdown(("tenant",), "2000-01-01", "2100-01-01")
    finally:
        home.close()
    calls = [row for row in rows if row["tenant"] == "acme"]
    assert calls and Decimal(calls[0]["cost"]) == told  # every admitted call recorded, once
