"""A gateway killed mid-call (``kill -9``) does not lose the call: the next start records it.

Real processes: ``outlay gateway`` serves against the fake provider (in this process), which hangs
one call; the gateway is killed while the call is upstream, then started again, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import openai
from click.testing import CliRunner

from outlay._runtime import Outlay
from outlay.budgets import Budget, BudgetEngine, Scope, SQLiteBudgetStore
from outlay.cli._gateway import keys
from outlay.events import CostEvent
from outlay.gateway._lost import LOST_ESTIMATE, LOST_REASON
from outlay.testing import FakeProvider, Fault

from .conftest import UPSTREAM_KEY, wait_for

MESSAGES = [{"role": "user", "content": "hello there"}]
_CODE = "from outlay.cli._gateway import gateway; gateway()"


def _env(fake_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OUTLAY_UPSTREAM_OPENAI": fake_url + "/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
    }


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """``outlay gateway`` in a process of its own, started and stopped (or killed) by the test."""

    def __init__(self, config: Path, fake_url: str, workers: int = 1) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-c", _CODE, "--port", str(self.port), "--config", str(config)]
        args += ["--workers", str(workers)]
        self.process = subprocess.Popen(args, env=_env(fake_url))
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/v1/models", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise AssertionError("the gateway did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert self.process.wait(timeout=30) in (0, -signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no shutdown, no flush, nothing
        self.process.wait(timeout=30)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'keys = "{tmp_path / "keys.db"}"\n'
        f'ledger = "{tmp_path / "outlay.db"}"\n'
        f'budget_store = "{tmp_path / "budgets.db"}"\n'
        "cache_ttl = 0\n"
    )
    return path


def _new_key(tmp_path: Path) -> str:
    result = CliRunner().invoke(
        keys, ["create", "--tenant", "acme", "--keys", str(tmp_path / "keys.db"), "--budget", "5/month"]
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _events(tmp_path: Path) -> list[CostEvent]:
    with Outlay(tmp_path / "outlay.db") as home:
        home.catch_up()
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        return [entry.event for entry in home.ledger.entries(start, end)]


def _budget(tmp_path: Path) -> tuple[Decimal, Decimal]:
    store = SQLiteBudgetStore(tmp_path / "budgets.db")
    try:
        status = BudgetEngine(store).status(
            Scope(tenant="acme"), Budget(Decimal(5), scope="tenant", key="acme", period="month")
        )
        return status.spent, status.reserved
    finally:
        store.close()


def test_a_call_in_flight_when_the_gateway_is_killed_is_recorded_by_the_next_start(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.reset()
    config = _config(tmp_path)
    secret = _new_key(tmp_path)
    served = Served(config, fake.url)  # type: ignore[attr-defined]
    client = openai.OpenAI(
        base_url=served.url + "/v1", api_key=secret, max_retries=0, timeout=30,
        default_headers={"X-Outlay-Feature": "summarise", "X-Outlay-User": "u-7", "X-Outlay-Agent": "digest"},
    )  # fmt: skip
    try:
        done = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]
        assert done.usage is not None
        fake.fail(Fault.hang())
        failed: list[BaseException] = []

        def call() -> None:
            try:
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=400)  # type: ignore[arg-type]
            except BaseException as exc:  # the connection dies with the gateway
                failed.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        wait_for(lambda: len(fake.requests) == 2)  # the call is upstream, the provider billing it
        served.kill()
        caller.join(timeout=30)
        assert failed, "the hung call cannot have been answered"
    finally:
        client.close()
    before = _events(tmp_path)
    assert len(before) == 1  # the killed process recorded nothing for the call in flight
    spent, reserved = _budget(tmp_path)
    assert reserved > 0  # its hold is still charged, until it expires

    Served(config, fake.url).stop()  # type: ignore[attr-defined]  # starting again recovers the call

    events = _events(tmp_path)
    assert len(events) == 2
    lost = next(e for e in events if e.event_id != before[0].event_id)
    assert (lost.tenant_id, lost.feature, lost.user_id, lost.agent) == ("acme", "summarise", "u-7", "digest")
    assert (lost.provider, lost.model, lost.status) == ("openai", "gpt-4o", "estimated")
    assert lost.priced and lost.cost is not None and lost.cost > 0  # unknown is not zero
    assert lost.labels["gateway.lost"] == LOST_REASON
    assert lost.labels["gateway.estimate"] == LOST_ESTIMATE
    assert "gateway.key" in lost.labels
    assert not lost.usage.complete and lost.usage.reason == LOST_REASON
    # Its hold is charged now, at the cost the ledger shows: budget and ledger agree.
    spent_after, reserved_after = _budget(tmp_path)
    assert reserved_after == 0
    assert spent_after == spent + lost.cost
    assert spent_after == sum(e.cost for e in events if e.cost is not None)
    assert list((tmp_path / "inflight").iterdir()) == []

    Served(config, fake.url).stop()  # type: ignore[attr-defined]  # a second start adds nothing
    assert len(_events(tmp_path)) == 2
    assert _budget(tmp_path) == (spent_after, reserved_after)


def _workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_worker_killed_mid_call_is_recorded_when_uvicorn_restarts_it(
    tmp_path: Path, fake: FakeProvider
) -> None:
    # The out-of-memory killer takes one worker of `outlay gateway --workers 2`: its supervisor
    # starts another, and that start records the call (no operator, no restart of the gateway).
    fake.reset()
    config = _config(tmp_path)
    secret = _new_key(tmp_path)
    served = Served(config, fake.url, workers=2)  # type: ignore[attr-defined]
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=secret, max_retries=0, timeout=30)
    try:
        fake.fail(Fault.hang())
        caller = threading.Thread(target=_call_ignoring_errors, args=(client,))
        caller.start()
        wait_for(lambda: len(fake.requests) == 1)
        workers = [pid for pid in _workers(served.process.pid) if _is_worker(pid)]
        assert len(workers) == 2
        for pid in workers:  # (which one took the call is not known: both die)
            os.kill(pid, signal.SIGKILL)
        caller.join(timeout=30)
        wait_for(lambda: len(_events(tmp_path)) == 1, timeout=30)
    finally:
        client.close()
        served.stop()
    [lost] = _events(tmp_path)
    assert (lost.tenant_id, lost.model, lost.status) == ("acme", "gpt-4o", "estimated")
    assert lost.labels["gateway.lost"] == LOST_REASON


def _call_ignoring_errors(client: openai.OpenAI) -> None:
    with contextlib.suppress(openai.APIError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=400)  # type: ignore[arg-type]


def _is_worker(pid: int) -> bool:
    """A uvicorn worker, not the resource tracker multiprocessing also starts."""
    return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
