"""One ASGI app that serves the gateway and the reporting API together (``outlay serve``).

Requests under ``/api/``, ``/dashboard``, ``/openapi.json`` and ``/docs`` go to the reporting API,
everything else to the gateway. Both apps keep their own lifespan: this app drives each one's
startup and shutdown in turn, so pools open once and the recorder is flushed on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CombinedApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIXES = ("/api/", "/dashboard", "/openapi.json", "/docs")


class _Lifespan:
    """Runs one app's lifespan protocol as a task we can step through startup and shutdown."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task = asyncio.ensure_future(app(dict(scope), self.inbox.get, self.outbox.put))

    async def step(self, event: str) -> Message:
        await self.inbox.put({"type": f"lifespan.{event}"})
        getter = asyncio.ensure_future(self.outbox.get())
        done, _ = await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        exc = self.task.exception()
        return {"type": f"lifespan.{event}.failed", "message": repr(exc) if exc else "lifespan ended"}


class CombinedApp:
    """Route by path between the reporting API and the gateway."""

    def __init__(self, gateway: ASGIApp, api: ASGIApp | None) -> None:
        self.gateway = gateway
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.api is not None and path.startswith(API_PREFIXES):
            await self.api(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        apps = [app for app in (self.gateway, self.api) if app is not None]
        running: list[_Lifespan] = []
        message = await receive()
        assert message["type"] == "lifespan.startup"
        for app in apps:
            lifespan = _Lifespan(app, scope)
            reply = await lifespan.step("startup")
            if reply["type"] != "lifespan.startup.complete":
                for started in reversed(running):
                    await started.step("shutdown")
                await send({"type": "lifespan.startup.failed", "message": reply.get("message", "")})
                return
            running.append(lifespan)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        for lifespan in reversed(running):
            await lifespan.step("shutdown")
        await send({"type": "lifespan.shutdown.complete"})
