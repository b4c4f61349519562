"""Realistic provider payloads, shaped after each provider's API reference and validated against the
official SDK types in test_sdk.py (so a field name typo here fails a test)."""

from __future__ import annotations

import copy
import json
from typing import Any

# --- OpenAI Chat Completions ---------------------------------------------------------------------

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 64,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

CHAT_AUDIO_COMPLETION: dict[str, Any] = {
    **copy.deepcopy(CHAT_COMPLETION),
    "model": "gpt-4o-audio-preview-2024-12-17",
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 500,
        "total_tokens": 620,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 80},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 430},
    },
}


def _chunk(
    delta: dict[str, Any], finish: str | None = None, *, usage: Any = None, choices: bool = True
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stream-1",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
        "usage": usage,
    }


CHAT_STREAM_USAGE = {
    "prompt_tokens": 1500,
    "completion_tokens": 42,
    "total_tokens": 1542,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}

CHAT_STREAM_EVENTS: list[dict[str, Any]] = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Hel"}),
    _chunk({"content": 'lo "usage": {not really}'}),  # a key-like string inside content
    _chunk({}, "stop"),
    _chunk({}, None, usage=CHAT_STREAM_USAGE, choices=False),
]

# --- OpenAI Responses ----------------------------------------------------------------------------

RESPONSES_USAGE = {
    "input_tokens": 5200,
    "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 0},
    "output_tokens": 900,
    "output_tokens_details": {"reasoning_tokens": 640},
    "total_tokens": 6100,
}


def _response(status: str, usage: Any, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "o4-mini-2025-04-16",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [{"type": "web_search_preview", "search_context_size": "medium"}],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


WEB_SEARCH_ITEMS = [
    {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "a"},
    },
    {
        "type": "web_search_call",
        "id": "ws_2",
        "status": "completed",
        "action": {"type": "search", "query": "b"},
    },
]
MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
}
RESPONSE = _response("completed", RESPONSES_USAGE, [*WEB_SEARCH_ITEMS, MESSAGE_ITEM])


def responses_stream_events(terminal: str = "response.completed") -> list[dict[str, Any]]:
    status = {
        "response.completed": "completed",
        "response.incomplete": "incomplete",
        "response.failed": "failed",
    }
    in_progress = _response("in_progress", None, [])
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": in_progress},
        {"type": "response.in_progress", "sequence_number": 1, "response": in_progress},
    ]
    for n, item in enumerate(WEB_SEARCH_ITEMS):
        events.append(
            {"type": "response.output_item.done", "sequence_number": 2 + n, "output_index": n, "item": item}
        )
    events += [
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            "item_id": MESSAGE_ITEM["id"],
            "output_index": 2,
            "content_index": 0,
            "delta": "Done.",
            "logprobs": [],
        },
        {
            "type": terminal,
            "sequence_number": 5,
            "response": _response(status[terminal], RESPONSES_USAGE, RESPONSE["output"]),
        },
    ]
    return events


# --- OpenAI Embeddings ---------------------------------------------------------------------------

EMBEDDINGS: dict[str, Any] = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

# --- Anthropic Messages --------------------------------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 10000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 700,
    "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
    "service_tier": "standard",
}

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude.", "citations": None}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
}


def anthropic_stream_events(*, delta_usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1, "server_tool_use": None}
    message = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None, "usage": start_usage}
    return [
        {"type": "message_start", "message": message},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": "", "citations": None},
        },
        {"type": "ping"},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": 'Hi! "message_delta"'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " My name is Claude."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": delta_usage
            if delta_usage is not None
            else {
                "output_tokens": 700,
                "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
            },
        },
        {"type": "message_stop"},
    ]


# --- Google Gemini -------------------------------------------------------------------------------

GEMINI_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {"parts": [{"text": "The weather is sunny."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
            "groundingMetadata": {
                "webSearchQueries": ["weather paris today", "", "weather paris today", "paris forecast"],
                "groundingChunks": [{"web": {"uri": "https://example.com", "title": "example.com"}}],
            },
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1000,
        "candidatesTokenCount": 150,
        "toolUsePromptTokenCount": 300,
        "thoughtsTokenCount": 450,
        "totalTokenCount": 2100,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 900},
            {"modality": "AUDIO", "tokenCount": 300},
        ],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 150}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}


def gemini_stream_events() -> list[dict[str, Any]]:
    def chunk(text: str, candidates: int, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
            **extra,
        }
        if finish:
            candidate["finishReason"] = finish
        usage = {
            "promptTokenCount": 800,
            "totalTokenCount": 800 + candidates + 200,
            "thoughtsTokenCount": 200,
        }
        if candidates:
            usage["candidatesTokenCount"] = candidates
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-pro",
            "responseId": "stream-resp-1",
        }

    return [
        chunk("The", 0),
        chunk(" answer", 12),
        chunk(" is 42.", 20, "STOP", groundingMetadata={"webSearchQueries": ["meaning of life"]}),
    ]


# --- SSE encoding --------------------------------------------------------------------------------


def sse(
    events: list[dict[str, Any]], *, named: bool = False, done: bool = False, crlf: bool = False
) -> bytes:
    """Encode events as the provider sends them (``event:`` lines for Anthropic/Responses, ``[DONE]``
    for chat, CRLF line ends for Gemini's alt=sse)."""
    nl = "\r\n" if crlf else "\n"
    out = []
    for event in events:
        head = f"event: {event['type']}{nl}" if named else ""
        out.append(f"{head}data: {json.dumps(event)}{nl}{nl}")
    if done:
        out.append(f"data: [DONE]{nl}{nl}")
    return "".join(out).encode()
