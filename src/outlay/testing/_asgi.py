"""Tiny raw-ASGI helpers for the fake provider (no framework on the hot path of a benchmark upstream)."""

from __future__ import annotations

import asyncio
import threading

from starlette.types import Receive, Scope, Send

__all__ = ["Receive", "Scope", "Send", "read_body", "send_bytes", "wait_for_disconnect"]


async def read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    length: int | None = None,
    more: bool = False,
) -> None:
    """Send a whole response (or, with ``more``, its start and a first part of ``length`` bytes)."""
    raw = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def wait_for_disconnect(receive: Receive, released: threading.Event, poll: float = 0.05) -> None:
    """Return when the client disconnects or ``released`` is set (from any thread)."""
    task = asyncio.ensure_future(receive())
    try:
        while not released.is_set():
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done and task.result()["type"] == "http.disconnect":
                return
            if done:
                task = asyncio.ensure_future(receive())
    finally:
        task.cancel()
