"""Run any ASGI app on a real uvicorn server in a background thread, on 127.0.0.1 and a free port."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from ._fake_provider import quiet_injected_drops

__all__ = ["LiveServer"]


class LiveServer:
    """A real HTTP server for ``app`` in a daemon thread; use as a context manager.

    ``url`` is the base URL (``http://127.0.0.1:<port>``). The port is bound before the thread starts,
    so there is no race for it, and :meth:`stop` shuts uvicorn down gracefully (running lifespan
    shutdown) and joins the thread.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: str = "auto",
        log_level: str = "warning",
        graceful_timeout: float = 2.0,
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan=lifespan,  # type: ignore[arg-type]
            log_level=log_level,
            ws="none",
            access_log=False,
            timeout_graceful_shutdown=int(graceful_timeout) or 1,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(quiet_injected_drops)
        self._thread = threading.Thread(target=self._run, name=f"outlay-live-server-{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()/stop() in the calling thread
            self._error = exc

    def start(self, timeout: float = 10.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server for {self.url} failed to start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server for {self.url} did not start within {timeout}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"server for {self.url} did not stop within {timeout}s")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
