"""Gateway overhead, skeleton: the same fake upstream called directly and through the gateway.

Each server runs in its own uvicorn process (no shared GIL with the load generator)::

    python bench/bench_gateway.py --requests 2000 --concurrency 32

Reports p50/p99 latency and throughput for both paths and the difference (the gateway's added
latency), with in-memory hooks. The side-by-side with the real backends and LiteLLM's proxy is
``bench/bench_gateway_compare.py`` (docs/benchmarks-gateway.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

from outlay.gateway import Gateway, GatewayConfig, InMemoryHooks, Principal
from outlay.testing import FakeProvider

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 16}


def fake_app() -> FakeProvider:
    return FakeProvider(record=False)


def gateway_app() -> Gateway:
    hooks = InMemoryHooks({"vk-bench": Principal("bench")})
    return Gateway(GatewayConfig.from_env(), hooks=hooks, trust_env=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(factory: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"bench_gateway:{factory}",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONPATH": os.path.dirname(__file__)})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer vk-bench"})
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{factory} did not start")


async def _load(url: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers={"authorization": "Bearer vk-bench"}) as client:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                start = time.perf_counter()
                response = await client.post(url, json=BODY)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - began


def _report(name: str, latencies: list[float], elapsed: float) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49] * 1000, cuts[98] * 1000
    print(f"{name:8s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {len(latencies) / elapsed:8.0f} req/s")
    return p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    fake_port, gw_port = _free_port(), _free_port()
    fake = _serve("fake_app", fake_port, {})
    gateway = _serve(
        "gateway_app",
        gw_port,
        {"OUTLAY_UPSTREAM_OPENAI": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "sk-bench"},
    )
    try:
        for name, url in (
            ("direct", f"http://127.0.0.1:{fake_port}/v1/chat/completions"),
            ("gateway", f"http://127.0.0.1:{gw_port}/v1/chat/completions"),
        ):
            asyncio.run(_load(url, min(200, args.requests), args.concurrency))  # warm-up
            results = asyncio.run(_load(url, args.requests, args.concurrency))
            _report(name, *results)
    finally:
        for proc in (fake, gateway):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
