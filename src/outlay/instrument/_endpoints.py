"""Which requests are billable LLM calls, whose API they are, and what their JSON body asks for.

A request is metered when it is a ``POST`` to one of the documented generation endpoints; anything
else (model lists, file uploads, batches, ``/messages/count_tokens``...) passes through untouched.
The provider is the one given to the transport, else the one whose API host the request goes to,
else guessed from the path (``/messages`` is Anthropic's, the rest speak OpenAI's wire format, as
self-hosted servers do). Gemini's OpenAI-compatible endpoint is billed as ``google`` but its answers
are read with OpenAI's wire format (https://ai.google.dev/gemini-api/docs/openai).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from outlay.providers import normalize_provider

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "Endpoint", "check_provider", "classify", "max_output_tokens"]

#: Output tokens assumed for a budget estimate when the request sets no limit of its own.
DEFAULT_MAX_OUTPUT_TOKENS: Final = 1024

_HOSTS: Final = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
}
# Gemini's OpenAI-compatible endpoint (.../v1beta/openai/chat/completions); Groq's and Azure's
# OpenAI paths also hold "/openai/", and are OpenAI's format billed by their own host.
_GEMINI_COMPAT: Final = "/v1beta/openai/"

# .../models/{model}:generateContent or :streamGenerateContent (Gemini API v1/v1beta, Vertex AI's
# .../publishers/google/models/{model}:...): https://ai.google.dev/api/generate-content
_GEMINI_NATIVE: Final = re.compile(
    r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)
# path suffix -> (API name as outlay.providers knows it, operation recorded on the event)
_OPENAI_APIS: Final = (
    ("/chat/completions", "chat", "chat"),
    ("/responses", "responses", "chat"),
    ("/embeddings", "embeddings", "embedding"),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A billable call: ``provider`` bills and prices it, ``wire`` is the format its answer is in."""

    provider: str
    wire: str  # what to hand outlay.providers: "openai", "anthropic", "google", or a declared provider
    api: str  # chat | responses | embeddings | messages | generate_content
    operation: str  # chat | embedding
    model: str | None = None  # named by the path (Gemini's API), not by the body
    stream: bool = False  # asked for by the path (Gemini's :streamGenerateContent)


def classify(method: str, host: str, path: str, provider: str | None) -> Endpoint | None:
    """The endpoint a request calls, or ``None`` when it is not a metered one."""
    if method != "POST":
        return None
    path = path.rstrip("/")
    if path.endswith("/messages"):
        name = provider or _HOSTS.get(host) or "anthropic"
        return Endpoint(name, name, "messages", "chat")
    native = _GEMINI_NATIVE.search(path)
    if native is not None:  # the google-genai SDK, the Gemini API and Vertex AI
        name = provider or _HOSTS.get(host) or "google"
        stream = native["method"] == "streamGenerateContent"
        return Endpoint(name, name, "generate_content", "chat", native["model"], stream)
    for suffix, api, operation in _OPENAI_APIS:
        if path.endswith(suffix):
            name = provider or _HOSTS.get(host) or ("google" if _GEMINI_COMPAT in path else "openai")
            wire = "openai" if name == "google" else name
            return Endpoint(name, wire, api, operation)
    return None


def check_provider(provider: str | None) -> str | None:
    """``provider`` as outlay knows it (``gemini`` -> ``google``); InvalidInput names the field."""
    return None if provider is None else normalize_provider(provider)


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def max_output_tokens(api: str, body: dict[str, Any], default: int) -> int:
    """The most output the request allows, for the worst-case estimate (``default`` if unset)."""
    if api == "embeddings":
        return 0
    if api == "generate_content":
        config = body.get("generationConfig")
        found = _count(config.get("maxOutputTokens")) if isinstance(config, dict) else None
        return default if found is None else found
    names = ("max_output_tokens",) if api == "responses" else ("max_completion_tokens", "max_tokens")
    limit = next((found for name in names if (found := _count(body.get(name))) is not None), default)
    choices = _count(body.get("n")) if api == "chat" else None
    # Each of n chat choices may produce the limit: held as one, a hard limit could be overshot.
    return limit * choices if choices is not None and choices > 1 else limit
