"""Helpers for the Redis budget tests: a port nothing listens on, and a TCP proxy to Redis that a
test can stop and start again (Redis "goes down" for this store only, not for the other tests)."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from decimal import Decimal
from types import TracebackType
from typing import Any


def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>. ``stop()`` closes the listener and every
    open connection (like a crashed server); ``start()`` listens on the same port again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = closed_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        #: While set, Redis's replies are dropped: commands still run, their callers time out.
        self.mute_replies = False

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for src, dst, reply in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, reply), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (reply and self.mute_replies):
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)


def replica(
    url: str, prefix: str, estimate: str, actual: str, callers: int, use_engine: bool, start: Any, out: Any
) -> None:
    """One "gateway replica" process: its own store, ``callers`` threads calling reserve -> settle
    against tenant acme's hard limit of $10 until refused. Reports, per admitted call, its actual
    cost and the amount held on the counter right after its admission (calls in flight)."""
    from outlay.budgets import Budget, BudgetEngine, BudgetExceeded, KeyLimit, RedisBudgetStore

    store = RedisBudgetStore(url, prefix=prefix)
    engine = BudgetEngine(store, policies=[Budget(limit="10.00", scope="tenant", key="acme")])
    key = [KeyLimit("tenant:acme", Decimal("10.00"))]
    admitted: list[tuple[str, str]] = []
    lock = threading.Lock()
    ready = threading.Barrier(callers + 1)

    def caller(number: int) -> None:
        ready.wait()
        for index in itertools.count():
            if use_engine:
                try:
                    reservation = engine.reserve({"tenant": "acme"}, estimate)
                except BudgetExceeded:
                    return
                held = ""
                engine.settle(reservation, actual)
            else:
                rid = f"{os.getpid()}-{number}-{index}"
                result = store.reserve(rid, key, Decimal(estimate), 60)
                if not result.ok:
                    return
                held = str(result.statuses[0].reserved)
                time.sleep(0)  # the provider call: let the other callers run
                store.settle(rid, Decimal(actual))
            with lock:
                admitted.append((actual, held))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()  # every replica's callers start together
    ready.wait()
    for thread in threads:
        thread.join()
    store.close()
    out.put((os.getpid(), admitted))
