"""Helpers for the NATS event log tests: unique streams, a private nats-server, cost events."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from outlay._usage import Usage
from outlay.events import CostEvent, encode_event

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def unique_stream() -> tuple[str, str]:
    """A stream name and subject prefix no other test (or engineer) uses."""
    tag = uuid.uuid4().hex[:12]
    return f"T_{tag}", f"outlay.test.{tag}"


def delete_stream(url: str, stream: str) -> None:
    async def delete() -> None:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().delete_stream(stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(delete())


def stream_messages(url: str, stream: str) -> list[tuple[int, str, dict[str, str]]]:
    """(sequence, subject, headers) of every message in ``stream``, read directly with nats-py."""

    async def fetch() -> list[tuple[int, str, dict[str, str]]]:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            jsm = nc.jsm()
            info = await jsm.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await jsm.get_msg(stream, seq)
                out.append((seq, msg.subject or "", dict(msg.headers or {})))
            return out
        finally:
            await nc.close()

    return asyncio.run(fetch())


def make_event(i: int, *, tenant: str | None = "acme", environment: str = "production") -> CostEvent:
    return CostEvent(
        tenant_id=tenant,
        attribution="attributed" if tenant is not None else "unattributed",
        origin=None if tenant is not None else "nightly-job",
        environment=environment,
        request_id=f"req-{i}",
        operation="chat",
        provider="openai",
        model="gpt-4o-mini",
        usage=Usage(input_tokens=1000 + i, output_tokens=100),
        cost=Decimal("0.0001") * (i % 7 + 1),
        priced=True,
    )


def encoded(event: CostEvent) -> bytes:
    return encode_event(event)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class PrivateNats:
    """A nats-server with JetStream of our own, on a free port, that tests may kill and restart."""

    def __init__(self, store: Path) -> None:
        if not Path(NATS_SERVER).exists():
            reason = f"nats-server binary not found ({NATS_SERVER})"
            if os.environ.get("OUTLAY_REQUIRE_SERVICES") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._proc is None
        self._proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, f"nats-server on port {self.port}")

    def _ready(self) -> bool:
        assert self._proc is not None
        assert self._proc.poll() is None, "nats-server exited at start"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self._proc is not None:
            self._proc.send_signal(sig)
            self._proc.wait(timeout=30)
            self._proc = None
