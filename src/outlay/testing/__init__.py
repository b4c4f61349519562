"""Test helpers offered to users: a fake LLM provider and a real server in a thread.

``FakeProvider`` answers like OpenAI, Anthropic and Gemini (OpenAI-compatible) with deterministic
usage and injectable faults; ``LiveServer`` runs it (or any ASGI app, such as the outlay gateway) on
uvicorn on 127.0.0.1 so the official SDKs can talk to it over real HTTP::

    from outlay.testing import FakeProvider, Fault, LiveServer

    fake = FakeProvider()
    with LiveServer(fake) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="test")
        fake.fail(Fault.error(429, retry_after=2))
"""

from __future__ import annotations

from ._fake_provider import FakeProvider, Fault, ModelBehaviour, RecordedRequest, count_input_tokens
from ._server import LiveServer

__all__ = ["FakeProvider", "Fault", "LiveServer", "ModelBehaviour", "RecordedRequest", "count_input_tokens"]
