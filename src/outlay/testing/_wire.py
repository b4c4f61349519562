"""Response bodies and stream events in each provider's documented wire format.

Pure functions of a :class:`Reply` (what the fake decided to answer), so the fake provider's ASGI
code stays about transport and faults. Field names follow the providers' API references:

- OpenAI Chat Completions and streaming chunks: https://platform.openai.com/docs/api-reference/chat
- OpenAI Responses and its streaming events: https://platform.openai.com/docs/api-reference/responses
- Anthropic Messages and streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming
- Gemini's OpenAI compatibility layer: https://ai.google.dev/gemini-api/docs/openai

The tier that served a call (``Reply.service_tier``) is reported as each provider does: OpenAI's
top-level ``service_tier`` (every chunk of a stream too), Anthropic's ``usage.service_tier``, and
for Gemini (``Reply.gemini_tier_as``) the ``usageMetadata.trafficType`` Vertex AI sends (only when
the tier is not standard), the Gemini API's ``usageMetadata.serviceTier``, or nothing in the body
(the Gemini API's ``x-gemini-service-tier`` header, which the fake provider sends).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Reply",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "chat_completion",
    "chat_stream",
    "embeddings",
    "gemini_error",
    "openai_error",
    "responses_object",
    "responses_stream",
    "sse",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the fake answers to one generation request: ids, text pieces and exact token counts."""

    id: str
    model: str
    pieces: tuple[str, ...]
    input_tokens: int  # all input tokens, cached ones included
    output_tokens: int  # all output tokens, reasoning included
    cached_tokens: int = 0  # OpenAI cached / Anthropic cache read
    cache_write_tokens: int = 0  # Anthropic cache creation
    reasoning_tokens: int = 0
    finish: str = "stop"  # "stop" or "length"
    service_tier: str | None = None  # the tier that served it, in the provider's words; None: standard
    gemini_tier_as: str = "trafficType"  # Gemini: "trafficType", "serviceTier" or "header" (not the body)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _openai_tier(reply: Reply) -> dict[str, str]:
    """OpenAI's ``service_tier`` field; Gemini's OpenAI-compatible endpoint sends none when its header
    names the tier."""
    return {} if reply.gemini_tier_as == "header" else {"service_tier": reply.service_tier or "default"}


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sse(data: object, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already ``bytes``."""
    payload = data if isinstance(data, bytes) else _dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


# -- errors -----------------------------------------------------------------------------------------


def openai_error(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def anthropic_error(message: str, type_: str, request_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return _dumps(body)


def gemini_error(message: str, code: int, status: str) -> bytes:
    # Gemini's OpenAI-compatible endpoint wraps its Google-style error in a one-element list.
    return _dumps([{"error": {"code": code, "message": message, "status": status}}])


# -- OpenAI Chat Completions --------------------------------------------------------------------------


def _chat_usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(reply: Reply) -> bytes:
    return _dumps(
        {
            "id": reply.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reply.finish,
                }
            ],
            "usage": _chat_usage(reply),
            **_openai_tier(reply),
            "system_fingerprint": "fp_outlay_fake",
        }
    )


def chat_stream(reply: Reply, *, include_usage: bool) -> Iterator[bytes]:
    """Chunks as OpenAI sends them; with ``include_usage`` every chunk carries ``"usage": null`` and
    one last chunk with empty ``choices`` carries the usage, before ``data: [DONE]``."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        body: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            **_openai_tier(reply),
            "system_fingerprint": "fp_outlay_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return sse(body)

    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for piece in reply.pieces:
        yield chunk({"content": piece}, None)
    yield chunk({}, reply.finish)
    if include_usage:
        yield sse(
            {
                "id": reply.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply.model,
                **_openai_tier(reply),
                "system_fingerprint": "fp_outlay_fake",
                "choices": [],
                "usage": _chat_usage(reply),
            }
        )
    yield sse(b"[DONE]")


# -- OpenAI Responses ---------------------------------------------------------------------------------


def _message_item(reply: Reply, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if text or (status == "completed")
        else []
    )
    return {
        "id": "msg_" + reply.id.removeprefix("resp_"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response(reply: Reply, status: str) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": reply.id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.model,
        "output": [_message_item(reply, reply.text, "completed")] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": reply.service_tier or "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": (
            {
                "input_tokens": reply.input_tokens,
                "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
                "output_tokens": reply.output_tokens,
                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                "total_tokens": reply.input_tokens + reply.output_tokens,
            }
            if done
            else None
        ),
        "user": None,
        "metadata": {},
    }


def responses_object(reply: Reply) -> bytes:
    return _dumps(_response(reply, "completed"))


def responses_stream(reply: Reply) -> Iterator[bytes]:
    """The Responses API's typed events, each with a ``sequence_number``, ending in ``response.completed``."""
    seq = 0
    item_id = "msg_" + reply.id.removeprefix("resp_")

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        body = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return sse(body, event=kind)

    yield event("response.created", response=_response(reply, "in_progress"))
    yield event("response.in_progress", response=_response(reply, "in_progress"))
    yield event("response.output_item.added", output_index=0, item=_message_item(reply, "", "in_progress"))
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
    for piece in reply.pieces:
        yield event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=0,
            content_index=0,
            delta=piece,
            logprobs=[],
        )
    yield event(
        "response.output_text.done",
        item_id=item_id,
        output_index=0,
        content_index=0,
        text=reply.text,
        logprobs=[],
    )
    done_part = {**part, "text": reply.text}
    yield event(
        "response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=done_part
    )
    yield event(
        "response.output_item.done", output_index=0, item=_message_item(reply, reply.text, "completed")
    )
    yield event("response.completed", response=_response(reply, "completed"))


# -- OpenAI embeddings --------------------------------------------------------------------------------


def _vector(seed: int, dimensions: int) -> list[float]:
    # Deterministic, exactly representable in float32 (multiples of 1/1024), so base64 round-trips.
    return [((seed * 31 + i * 7) % 2048 - 1024) / 1024 for i in range(dimensions)]


def embeddings(model: str, texts: list[str], prompt_tokens: int, *, dimensions: int, encoding: str) -> bytes:
    data: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        vector = _vector(len(text) + index, dimensions)
        value: object = vector
        if encoding == "base64":
            # The openai SDK asks for base64 by default: little-endian float32, base64-encoded.
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return _dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


# -- Anthropic Messages -------------------------------------------------------------------------------

_STOP = {"stop": "end_turn", "length": "max_tokens"}


def _anthropic_usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
    # Anthropic's input_tokens is the *uncached* part; cache reads/writes are reported beside it.
    uncached = reply.input_tokens - reply.cached_tokens - reply.cache_write_tokens
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": reply.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": reply.service_tier or "standard",
    }


def anthropic_message(reply: Reply) -> bytes:
    return _dumps(
        {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": _STOP[reply.finish],
            "stop_sequence": None,
            "usage": _anthropic_usage(reply, reply.output_tokens),
        }
    )


def anthropic_stream(reply: Reply) -> Iterator[bytes]:
    """message_start (input usage, output_tokens 1), one text block, a ping, message_delta with the
    cumulative usage, message_stop."""
    start: dict[str, Any] = {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(reply, min(1, reply.output_tokens)),
    }
    yield sse({"type": "message_start", "message": start}, event="message_start")
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    yield sse(block, event="content_block_start")
    yield sse({"type": "ping"}, event="ping")
    for piece in reply.pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        yield sse(delta, event="content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
    usage = _anthropic_usage(reply, reply.output_tokens)
    del usage["cache_creation"], usage["service_tier"]
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _STOP[reply.finish], "stop_sequence": None},
        "usage": usage,
    }
    yield sse(message_delta, event="message_delta")
    yield sse({"type": "message_stop"}, event="message_stop")


def _gemini_usage(reply: Reply, *, final: bool) -> dict[str, Any]:
    """``usageMetadata`` (https://ai.google.dev/api/generate-content#UsageMetadata): thoughts are
    reported beside the candidates' tokens; zero fields are left out, as proto3 JSON does."""
    visible = reply.output_tokens - reply.reasoning_tokens
    usage: dict[str, Any] = {"promptTokenCount": reply.input_tokens}
    if final:
        usage["candidatesTokenCount"] = visible
        if reply.reasoning_tokens:
            usage["thoughtsTokenCount"] = reply.reasoning_tokens
    usage["totalTokenCount"] = reply.input_tokens + (reply.output_tokens if final else 0)
    if reply.cached_tokens:
        usage["cachedContentTokenCount"] = reply.cached_tokens
    if reply.gemini_tier_as == "serviceTier":
        usage["serviceTier"] = reply.service_tier or "standard"
    elif reply.service_tier is not None and reply.gemini_tier_as == "trafficType":
        usage["trafficType"] = f"ON_DEMAND_{reply.service_tier.upper()}"
    return usage


def _gemini_chunk(reply: Reply, text: str, *, final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "MAX_TOKENS" if reply.finish == "length" else "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _gemini_usage(reply, final=final),
        "modelVersion": reply.model,
        "responseId": reply.id,
    }


def gemini_response(reply: Reply) -> bytes:
    """A ``generateContent`` GenerateContentResponse."""
    return _dumps(_gemini_chunk(reply, reply.text, final=True))


def gemini_stream(reply: Reply) -> Iterator[bytes]:
    """``streamGenerateContent?alt=sse``: one GenerateContentResponse per event, each with the
    running ``usageMetadata``; the last carries the finishReason and the final counts."""
    pieces = reply.pieces or ("",)
    for index, piece in enumerate(pieces):
        yield b"data: " + _dumps(_gemini_chunk(reply, piece, final=index == len(pieces) - 1)) + b"\r\n\r\n"
