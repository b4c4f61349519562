"""Side by side: one fake upstream called directly, through outlay's gateway and through LiteLLM's proxy.

Every server runs in its own process; the load comes from this process (fixed-rate latency) and from
``wrk`` (maximum throughput). See docs/benchmarks-gateway.md for the commands and the figures::

    python bench/bench_gateway_compare.py --litellm /tmp/litellm-venv/bin/litellm

- **upstream**: a raw asyncio (uvloop) HTTP/1.1 server answering every chat completion at once with a
  fixed body (usage included), so it is never the bottleneck (``serve-upstream`` subcommand).
- **outlay**: ``outlay.gateway:app_from_env`` under uvicorn, exactly what ``outlay gateway`` serves,
  with its default durable backends: SQLite virtual keys, a SQLite budget store (the key carries a
  monthly budget, so every call reserves and settles) and the SQLite event log + ledger (one cost
  event per call, committed before the answer).
- **litellm**: ``litellm --config`` with an OpenAI-compatible model pointing at the upstream and a
  master key (no database: LiteLLM needs PostgreSQL + Prisma for virtual keys, budgets and spend
  logs, so this is LiteLLM at its lightest — a favourable comparison for it).

Added latency = a path's percentile minus the direct path's, at the same fixed request rate
(open loop: requests are sent on schedule, on as many keep-alive connections as needed, whatever
the answers do). Maximum throughput: ``wrk`` closed loop, 64 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "gpt-4o-mini"
MAX_IN_FLIGHT = 512  # open-loop requests outstanding at once; more are counted as errors
KEEPALIVE_REUSE = 4.0  # seconds an idle connection is reused: under every server's keep-alive timeout
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 16}
).encode()
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 25, "completion_tokens": 4, "total_tokens": 29},
    }
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
).encode()


# -- the upstream: raw asyncio, keep-alive, zero latency -------------------------------------------


def _http(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


_ANSWERS = {b"completions": _http(b"200 OK", COMPLETION), b"models": _http(b"200 OK", MODELS)}
_NOT_FOUND = _http(b"404 Not Found", b'{"error":{"message":"not found"}}')


class _Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = b""
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's TCPTransport is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].lower()
            start = end + 4
            if b"transfer-encoding: chunked" in head:
                stop = self._buffer.find(b"\r\n0\r\n\r\n", start - 2)
                if stop < 0:
                    return
                total = stop + 7
            else:
                found = re.search(rb"content-length:\s*(\d+)", head)
                total = start + (int(found.group(1)) if found else 0)
            if len(self._buffer) < total:
                return
            path = head.split(b" ", 2)[1].split(b"?")[0]
            self._buffer = self._buffer[total:]
            self._transport.write(_ANSWERS.get(path.rsplit(b"/", 1)[-1], _NOT_FOUND))


def serve_upstream(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- servers in their own processes ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


@contextmanager
def _process(cmd: list[str], port: int, what: str, env: dict[str, str] | None = None) -> Iterator[None]:
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{what}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, proc, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode not in (0, -15):
            print(f"  ({what} log: {log.name})", file=sys.stderr)


def outlay_gateway(
    home: Path, upstream: str, port: int, workers: int
) -> tuple[list[str], dict[str, str], str]:
    """The command, environment and client key of a gateway with every feature on."""
    from outlay.keys import open_key_store

    store = open_key_store(f"sqlite:{home / 'keys.db'}")
    _, secret = store.create("bench", feature="chat", budget="1000000.00/month")
    store.close()
    config = home / "gateway.toml"
    config.write_text(
        f'keys = "sqlite:{home / "keys.db"}"\nledger = "{home / "outlay.db"}"\n'
        f'budget_store = "sqlite:{home / "budgets.db"}"\n'
    )
    cmd = [
        sys.executable, "-m", "uvicorn", "outlay.gateway:app_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log", "--lifespan", "on",
    ]  # fmt: skip
    env = {
        "OUTLAY_GATEWAY_CONFIG": str(config),
        "OUTLAY_UPSTREAM_OPENAI": upstream + "/v1",
        "OPENAI_API_KEY": "sk-upstream-bench",
    }
    return cmd, env, secret


def open_gateway_app() -> object:
    """uvicorn factory: the gateway's proxy core alone (no keys, budgets or events), for --breakdown."""
    from outlay.gateway import Gateway, GatewayConfig, OpenHooks

    return Gateway(GatewayConfig.from_env(), hooks=OpenHooks())


def open_gateway(upstream: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
        "bench_gateway_compare:open_gateway_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return cmd, {"OUTLAY_UPSTREAM_OPENAI": upstream + "/v1", "OPENAI_API_KEY": "sk-upstream-bench"}


def litellm_proxy(litellm: str, home: Path, upstream: str, port: int, workers: int) -> tuple[list[str], str]:
    config = home / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-upstream-bench\n"
        "general_settings:\n"
        "  master_key: sk-litellm-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    cmd = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", str(workers)]
    return cmd, "sk-litellm-bench"


# -- load: open loop at a fixed rate ---------------------------------------------------------------


@dataclass
class Latencies:
    rate: int
    sent: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_lag_ms: float  # how late the generator sent its latest request (it must keep up)
    error_kinds: dict[str, int] = field(default_factory=dict)  # "HTTP 502", "ConnectionResetError", ...


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    found = re.search(rb"content-length:\s*(\d+)", lower)
    if found:
        await reader.readexactly(int(found.group(1)))
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _fixed_rate(port: int, request: bytes, rate: int, duration: float) -> Latencies:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    latencies: list[float] = []
    kinds: collections.Counter[str] = collections.Counter()
    max_lag = 0.0

    async def fire() -> None:
        conn = None
        while idle:  # newest first; one idle for longer than the servers' keep-alive (uvicorn: 5 s)
            reader, writer, used = idle.pop()  # may be closed by now, as any HTTP client knows
            if time.perf_counter() - used < KEEPALIVE_REUSE:
                conn = (reader, writer)
                break
            writer.close()
        if conn is None:
            conn = await asyncio.open_connection("127.0.0.1", port)
        began = time.perf_counter()  # uvloop's loop.time() only has millisecond resolution
        try:
            status = await _exchange(*conn, request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            kinds[type(exc).__name__] += 1
            conn[1].close()
            return
        latencies.append(time.perf_counter() - began)
        if status != 200:
            kinds[f"HTTP {status}"] += 1
        idle.append((*conn, time.perf_counter()))

    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, time.perf_counter() - due)
        if len(tasks) >= MAX_IN_FLIGHT:  # saturated: count the request as failed rather than queue forever
            kinds["saturated"] += 1
            continue
        task = asyncio.create_task(fire())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return Latencies(
        rate, total, sum(kinds.values()), cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000,
        max_lag * 1000, dict(kinds),
    )  # fmt: skip


def fixed_rate(port: int, path: str, token: str, rate: int, duration: float, warmup: float) -> Latencies:
    import uvloop

    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {token}\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY

    async def run() -> Latencies:
        await _fixed_rate(port, request, rate, warmup)
        return await _fixed_rate(port, request, rate, duration)

    return uvloop.run(run())


# -- load: closed loop, maximum throughput (wrk) ---------------------------------------------------


def wrk_throughput(
    wrk: str, url: str, token: str, connections: int, seconds: int, home: Path
) -> dict[str, float]:
    script = home / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(BODY.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
        "p50_ms": _wrk_ms(out, "50%"),
        "p99_ms": _wrk_ms(out, "99%"),
    }


def _wrk_ms(out: str, label: str) -> float:
    found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
    if not found:
        return float("nan")
    value, unit = float(found.group(1)), found.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


# -- the run ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("serve-upstream")
    up.add_argument("--port", type=int, required=True)
    parser.add_argument("--litellm", help="the litellm CLI of its own virtualenv (omit to skip LiteLLM)")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="wrk binary (default: on PATH)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each proxy")
    parser.add_argument("--rates", default="100,500", help="fixed request rates, comma separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds at the rate before measuring")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (throughput)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration (throughput)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the whole comparison (servers restarted each round)"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also measure the gateway's proxy core alone (no hooks)"
    )
    args = parser.parse_args()
    if args.command == "serve-upstream":
        serve_upstream(args.port)
        return
    rates = [int(r) for r in args.rates.split(",")]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        home = Path(tmp)
        up_port = _free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        up_cmd = [sys.executable, __file__, "serve-upstream", "--port", str(up_port)]
        with _process(up_cmd, up_port, "upstream"):
            targets: list[tuple[str, list[str] | None, dict[str, str], int, str]] = [
                ("direct", None, {}, up_port, "sk-upstream-bench")
            ]
            gw_port = _free_port()
            cmd, env, secret = outlay_gateway(home, upstream, gw_port, args.workers)
            targets.append(("outlay", cmd, env, gw_port, secret))
            if args.breakdown:
                open_port = _free_port()
                open_cmd, open_env = open_gateway(upstream, open_port, args.workers)
                targets.append(("outlay-proxy-only", open_cmd, open_env, open_port, "none"))
            if args.litellm:
                ll_port = _free_port()
                ll_cmd, token = litellm_proxy(args.litellm, home, upstream, ll_port, args.workers)
                targets.append(("litellm", ll_cmd, {}, ll_port, token))
            rounds: list[dict[str, dict[str, object]]] = []
            for round_number in range(1, args.rounds + 1):
                results = {}
                for name, command, environ, port, token in targets:
                    print(f"== {name} (round {round_number}/{args.rounds})", flush=True)
                    server = _process(command, port, name, environ) if command else _nothing()
                    with server:
                        results[name] = _measure(args, home, port, token, rates)
                rounds.append(results)
                if args.rounds > 1:
                    print(f"\n-- round {round_number}")
                _print(results, rates)
    if args.rounds > 1:
        _print_rounds(rounds, rates)
    if args.json:
        Path(args.json).write_text(json.dumps(rounds if args.rounds > 1 else rounds[0], indent=2))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _measure(
    args: argparse.Namespace, home: Path, port: int, token: str, rates: list[int]
) -> dict[str, object]:
    path = "/v1/chat/completions"
    out: dict[str, object] = {}
    for rate in rates:
        found = fixed_rate(port, path, token, rate, args.duration, args.warmup)
        print(f"   {rate:4d} req/s: {found}", flush=True)
        out[f"rate_{rate}"] = found.__dict__
    if args.wrk:
        found_max = wrk_throughput(args.wrk, f"http://127.0.0.1:{port}{path}", token, args.connections,
                                   args.seconds, home)  # fmt: skip
        print(f"   max: {found_max}", flush=True)
        out["max"] = found_max
    return out


def _kinds(row: dict[str, Any]) -> str:
    kinds = row.get("error_kinds") or {}
    return f" ({', '.join(f'{kind}: {count}' for kind, count in sorted(kinds.items()))})" if kinds else ""


def _print(results: dict[str, dict[str, object]], rates: list[int]) -> None:
    direct = results["direct"]
    print("\n| path | rate | p50 ms | p99 ms | added p50 | added p99 | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, found in results.items():
        for rate in rates:
            row = found[f"rate_{rate}"]
            base = direct[f"rate_{rate}"]
            assert isinstance(row, dict)
            assert isinstance(base, dict)
            print(
                f"| {name} | {rate} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['p50_ms'] - base['p50_ms']:+.2f} | {row['p99_ms'] - base['p99_ms']:+.2f} | "
                f"{row['errors']}/{row['sent']}{_kinds(row)} |"
            )
    print("\n| path | max req/s (wrk, 64 conns) | wrk p50 ms | wrk p99 ms | non-2xx |")
    print("|---|---|---|---|---|")
    for name, found in results.items():
        best = found.get("max")
        if isinstance(best, dict):
            cells = f"{best['rps']:.0f} | {best['p50_ms']:.2f} | {best['p99_ms']:.2f} | {best['non_2xx']:.0f}"
            print(f"| {name} | {cells} |")


def _max_rps(found: dict[str, object]) -> float | None:
    best = found.get("max")
    return float(best["rps"]) if isinstance(best, dict) else None


def _spread(values: list[float], digits: int) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def _print_rounds(rounds: list[dict[str, dict[str, object]]], rates: list[int]) -> None:
    """Per path: the median over the rounds of added p50/p99 at each rate and of max req/s, with the
    range, and the ratio to LiteLLM's throughput within each round (both saw the same machine)."""
    print(f"\n## Over {len(rounds)} rounds: median (min to max)")
    print("\n| path | rate | added p50 ms | added p99 ms |")
    print("|---|---|---|---|")
    for name in rounds[0]:
        if name == "direct":
            continue
        for rate in rates:
            p50s, p99s = [], []
            for found in rounds:
                row, base = found[name][f"rate_{rate}"], found["direct"][f"rate_{rate}"]
                assert isinstance(row, dict)
                assert isinstance(base, dict)
                p50s.append(row["p50_ms"] - base["p50_ms"])
                p99s.append(row["p99_ms"] - base["p99_ms"])
            print(f"| {name} | {rate} | {_spread(p50s, 2)} | {_spread(p99s, 2)} |")
    print("\n| path | max req/s | × LiteLLM (same round) |")
    print("|---|---|---|")
    for name in rounds[0]:
        rps = [r for found in rounds if (r := _max_rps(found[name])) is not None]
        if not rps:
            continue
        ratios = []
        for found in rounds:
            ours, theirs = _max_rps(found[name]), _max_rps(found.get("litellm", {}))
            if ours is not None and theirs:
                ratios.append(ours / theirs)
        print(f"| {name} | {_spread(rps, 0)} | {_spread(ratios, 1) if ratios else '—'} |")


if __name__ == "__main__":
    main()
