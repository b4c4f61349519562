"""Google's Gemini ``generateContent`` format (Gemini API and Vertex AI).

- ``usageMetadata``: https://ai.google.dev/api/generate-content#UsageMetadata —
  ``promptTokenCount`` already includes ``cachedContentTokenCount`` ("when cachedContent is set,
  this is still the total effective prompt size"); ``toolUsePromptTokenCount`` (tool results fed
  back, e.g. grounding) is reported beside it and billed as input, so outlay's input is their sum.
  ``thoughtsTokenCount`` is reported *beside* ``candidatesTokenCount`` and billed as output, so
  outlay's output is their sum and reasoning is the thoughts. ``*TokensDetails`` are lists of
  ``{"modality": "AUDIO" | "IMAGE" | ..., "tokenCount": n}``. Zero fields are omitted (proto3 JSON).
- Grounding with Google Search: https://ai.google.dev/gemini-api/docs/grounding —
  ``candidates[].groundingMetadata.webSearchQueries`` lists the queries run; billing ignores empty
  ones, so ``web_searches`` counts the distinct non-empty queries. (Gemini 2.x bills per grounded
  prompt rather than per query: price that with a per-request unit if it matters to you.)
- Streaming (``streamGenerateContent?alt=sse``): each chunk is a GenerateContentResponse whose
  ``usageMetadata`` is the running total; the last chunk carrying one holds the final counts, and a
  candidate's ``finishReason`` marks the end (there is no end-of-stream sentinel).

- Service tier: Vertex AI reports the tier that served a request as ``usageMetadata.trafficType``
  (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/GenerateContentResponse#TrafficType):
  ``ON_DEMAND_PRIORITY`` and ``ON_DEMAND_FLEX`` are the priority and flex tiers; ``ON_DEMAND`` and
  ``PROVISIONED_THROUGHPUT`` are rated at the standard price. The Gemini API (ai.google.dev) names
  it in the ``x-gemini-service-tier`` response *header* (https://ai.google.dev/gemini-api/docs/
  priority-inference: ``standard``, ``priority``, ``flex``), which the caller hands in as
  ``headers`` (the whole-answer header; streams have not been seen to carry it), and newer answers
  in ``usageMetadata.serviceTier`` (whole and streamed; "not supported in Vertex AI"). A tier the
  body names wins over the header's.

The SDK's snake_case names (``usage_metadata``, ``prompt_token_count``...) are read too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from outlay._errors import InvalidUsage
from outlay._usage import CACHE_AUDIO_READ_UNIT, Usage

from ._base import ParsedResponse, StreamState, cut_usage, describe_error
from ._common import bad_count, gemini_tier, header_tier, with_tier, within

#: Vertex AI ``trafficType`` -> the service tier it is billed at (others are standard).
_TRAFFIC_TIERS: Final = {"ON_DEMAND_PRIORITY": "priority", "ON_DEMAND_FLEX": "flex"}

__all__ = ["GoogleStream", "body_tier", "gemini_usage", "read_google"]

_SNAKE: dict[str, str] = {}


def _get(obj: Mapping[str, Any], camel: str) -> Any:
    value = obj.get(camel)
    if value is None:
        snake = _SNAKE.get(camel)
        if snake is None:
            snake = _SNAKE[camel] = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
        value = obj.get(snake)
    return value


def _count(obj: Mapping[str, Any], camel: str, at: str) -> int:
    value = _get(obj, camel)
    if type(value) is int and value >= 0:
        return value
    if value is None:
        return 0
    raise bad_count(f"{at}.{camel}", value)


def _modalities(obj: Mapping[str, Any], camel: str, at: str) -> dict[str, int]:
    items = _get(obj, camel)
    if items is None:
        return {}
    if not isinstance(items, list):
        raise InvalidUsage(f"must be a list, got {type(items).__name__}", field=f"{at}.{camel}")
    out: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{at}.{camel}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidUsage(f"must be an object, got {type(item).__name__}", field=where)
        modality = item.get("modality")
        if not isinstance(modality, str):
            raise InvalidUsage(f"must be a string, got {modality!r}", field=f"{where}.modality")
        out[modality] = out.get(modality, 0) + _count(item, "tokenCount", where)
    return out


def gemini_usage(u: Any, at: str, web_searches: int = 0) -> Usage:
    if not isinstance(u, Mapping):
        raise InvalidUsage(f"must be an object, got {type(u).__name__}", field=at)
    prompt = _count(u, "promptTokenCount", at)
    cached = _count(u, "cachedContentTokenCount", at)
    tool_prompt = _count(u, "toolUsePromptTokenCount", at)
    candidates = _count(u, "candidatesTokenCount", at)
    thoughts = _count(u, "thoughtsTokenCount", at)
    within(cached, f"{at}.cachedContentTokenCount", prompt, f"{at}.promptTokenCount")
    inputs = _modalities(u, "promptTokensDetails", at)
    for modality, n in _modalities(u, "toolUsePromptTokensDetails", at).items():
        inputs[modality] = inputs.get(modality, 0) + n
    outputs = _modalities(u, "candidatesTokensDetails", at)
    # The prompt's audio and images include what was read from the cache, which cachedContentTokenCount
    # counts too: each cached token is charged once, as a cache read, not a second time as audio
    # input. Google bills cached audio above cached text (gemini-2.5-flash: $0.10 vs $0.03 per
    # million), so the cached audio is kept as the CACHE_AUDIO_READ_UNIT part of the cache reads.
    cached_audio = 0
    for modality, n in _modalities(u, "cacheTokensDetails", at).items():
        if modality in ("AUDIO", "IMAGE"):
            where = f"{at}.cacheTokensDetails[modality={modality}].tokenCount"
            within(n, where, inputs.get(modality, 0), f"{at}.promptTokensDetails[modality={modality}]")
            within(n, where, cached, f"{at}.cachedContentTokenCount")
            inputs[modality] -= n
            if modality == "AUDIO":
                cached_audio = n
    total_in, total_out = prompt + tool_prompt, candidates + thoughts
    for name in ("AUDIO", "IMAGE"):
        where = f"[modality={name}].tokenCount"
        within(
            inputs.get(name, 0),
            f"{at}.promptTokensDetails{where}",
            total_in,
            f"{at}.promptTokenCount+toolUse",
        )
        within(
            outputs.get(name, 0),
            f"{at}.candidatesTokensDetails{where}",
            candidates,
            f"{at}.candidatesTokenCount",
        )
    return Usage(
        input_tokens=total_in,
        cache_read_tokens=cached,
        input_audio_tokens=inputs.get("AUDIO", 0),
        input_image_tokens=inputs.get("IMAGE", 0),
        output_tokens=total_out,
        reasoning_tokens=thoughts,
        output_audio_tokens=outputs.get("AUDIO", 0),
        output_image_tokens=outputs.get("IMAGE", 0),
        web_searches=web_searches,
        **_cached_audio_units(cached_audio),
    )


def body_tier(u: object) -> object:
    """The tier ``usageMetadata`` names (Vertex's ``trafficType``, the Gemini API's ``serviceTier``),
    as :func:`with_tier` takes it; ``None`` when it names none, so the header's may be used."""
    if not isinstance(u, Mapping):
        return None
    traffic = _get(u, "trafficType")
    if traffic is not None:
        return _TRAFFIC_TIERS.get(traffic, "standard") if type(traffic) is str else traffic
    return gemini_tier(_get(u, "serviceTier"))


def _cached_audio_units(cached_audio: int) -> dict[str, Any]:
    return {"units": {CACHE_AUDIO_READ_UNIT: cached_audio}} if cached_audio else {}


def _candidates(body: Mapping[str, Any], at: str) -> list[Mapping[str, Any]]:
    items = body.get("candidates")
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(c, Mapping) for c in items):
        raise InvalidUsage("must be a list of objects", field=f"{at}candidates")
    return items


def _search_queries(candidates: list[Mapping[str, Any]], at: str, into: set[str]) -> None:
    for i, candidate in enumerate(candidates):
        grounding = _get(candidate, "groundingMetadata")
        if not isinstance(grounding, Mapping):
            continue
        queries = _get(grounding, "webSearchQueries")
        if queries is None:
            continue
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise InvalidUsage(
                "must be a list of strings", field=f"{at}candidates[{i}].groundingMetadata.webSearchQueries"
            )
        into.update(q for q in queries if q.strip())


def _model(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    model, rid = _get(body, "modelVersion"), _get(body, "responseId")
    return (model if isinstance(model, str) else None), (rid if isinstance(rid, str) else None)


def read_google(body: dict[str, Any], api: str | None, header: object = None) -> ParsedResponse:
    """``header``: the tier the response's ``x-gemini-service-tier`` header names, if any."""
    raw = _get(body, "usageMetadata")
    if raw is None:
        raise InvalidUsage(
            "is missing: the body is not a generateContent response with usage", field="usageMetadata"
        )
    queries: set[str] = set()
    _search_queries(_candidates(body, ""), "", queries)
    usage = gemini_usage(raw, "usageMetadata", len(queries))
    tier = body_tier(raw)
    if tier is None and header is None:
        # A google-genai response object keeps its HTTP headers (``sdk_http_response.headers``).
        http = _get(body, "sdkHttpResponse")
        sent = http.get("headers") if isinstance(http, Mapping) else None
        header = header_tier(sent) if isinstance(sent, Mapping) else None
    return ParsedResponse(with_tier(usage, header if tier is None else tier), *_model(body))


class GoogleStream(StreamState):
    """Latest ``usageMetadata`` wins; complete once a candidate reported its ``finishReason``."""

    def __init__(self) -> None:
        super().__init__()
        self._raw: Any = None
        self._label = "usageMetadata"
        self._queries: set[str] = set()
        self._error: str | None = None

    def on_event(self, event: dict[str, Any], label: str) -> None:
        if "error" in event:
            self._error, self.done = describe_error(event["error"]), True
            return
        model, rid = _model(event)
        self.model, self.response_id = model or self.model, rid or self.response_id
        raw = _get(event, "usageMetadata")
        if raw is not None:
            self._raw, self._label = raw, f"{label}.usageMetadata"
            tier = body_tier(raw)
            if tier is not None:
                self.service_tier = tier
        candidates = _candidates(event, f"{label}.")
        _search_queries(candidates, f"{label}.", self._queries)
        if any(_get(c, "finishReason") for c in candidates):
            self.done = True

    def usage(self) -> Usage:
        usage = gemini_usage(self._raw, self._label, len(self._queries)) if self._raw is not None else None
        if usage is not None and self.done and self._error is None:
            return usage
        if self._error is not None:
            why = f"provider error in the stream: {self._error}"
        elif usage is None:
            why = "no chunk carried usageMetadata"
        else:
            why = "no candidate reported a finishReason; counts are the latest chunk's"
        return cut_usage(usage, why)
