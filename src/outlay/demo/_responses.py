"""Provider response bodies as the real APIs return them, so the demo exercises real usage extraction.

Each builder returns the JSON object the provider's API sends back (shaped after the API references
and the payloads in ``tests/providers/fixtures.py``); the demo hands it to
``record_llm(provider=..., response=...)`` exactly as an application would hand over an SDK result.
Only the counts vary; the text is a placeholder.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

__all__ = [
    "anthropic_message",
    "gemini_response",
    "openai_chat",
    "openai_embeddings",
]

_ids = itertools.count(1)


def _next_id() -> str:
    # Response ids are not priced or compared; a counter keeps them unique within a process.
    return f"{next(_ids):012x}"


def openai_chat(
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    created: datetime,
) -> dict[str, Any]:
    """A Chat Completions body (``object: chat.completion``); o-series models report reasoning."""
    return {
        "id": f"chatcmpl-demo{_next_id()}",
        "object": "chat.completion",
        "created": int(created.timestamp()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "…", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_demo",
    }


def openai_embeddings(*, model: str, inputs: int, tokens: int) -> dict[str, Any]:
    """An Embeddings body (``object: list``) for ``inputs`` texts totalling ``tokens`` tokens."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.0023, -0.0093, 0.0151]} for i in range(inputs)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def anthropic_message(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    """A Messages body. Anthropic's ``input_tokens`` is the *uncached* input only; cache reads and
    writes are reported beside it (outlay adds them up into ``Usage.input_tokens``)."""
    return {
        "id": f"msg_demo{_next_id()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "…"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def gemini_response(
    *,
    model: str,
    prompt_tokens: int,
    candidates_tokens: int,
    thoughts_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """A ``generateContent`` body; thinking models report ``thoughtsTokenCount`` beside the
    candidates (billed as output)."""
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    if cached_tokens:
        usage["cachedContentTokenCount"] = cached_tokens
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": "…"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": f"demo{_next_id()}",
    }
