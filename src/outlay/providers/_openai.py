"""OpenAI's formats: Chat Completions (and legacy Completions), Responses, Embeddings.

Also every server that speaks them (vLLM, Gemini's and others' OpenAI compatibility layers), under
a name given with ``declare_provider``. Field references:

- Chat usage: https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage —
  ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes
  ``completion_tokens_details.reasoning_tokens`` (and audio / prediction tokens).
- Chat streaming: https://platform.openai.com/docs/api-reference/chat/streaming — with
  ``stream_options.include_usage`` the last chunk before ``data: [DONE]`` has ``"choices": []`` and
  the usage; every other chunk has ``"usage": null``. Some servers (vLLM ``continuous_usage_stats``)
  put cumulative usage in every chunk: the latest one wins.
- Responses: https://platform.openai.com/docs/api-reference/responses/object — ``input_tokens``
  includes ``input_tokens_details.cached_tokens``; web searches are ``web_search_call`` output items
  and file searches ``file_search_call`` items, each billed per call beside the tokens
  (https://openai.com/api/pricing/, "Built-in tools"): genai-prices prices the latter as the
  ``storage_searches`` unit.
- Responses streaming: https://platform.openai.com/docs/api-reference/responses-streaming — the
  terminal ``response.completed`` / ``response.incomplete`` / ``response.failed`` event carries the
  whole response with its usage.
- Service tier: the top-level ``service_tier`` of a chat completion, chunk or response is "the
  processing type used for serving the request" (``default``, ``flex``, ``priority``, ``scale``),
  which may differ from the one asked for
  (https://platform.openai.com/docs/api-reference/chat/object#chat/object-service_tier). In a
  stream every chunk repeats it, and ``response.created`` may say what was asked while the
  terminal event says what served it: the latest value wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from outlay._errors import InvalidUsage
from outlay._usage import Usage

from ._base import ParsedResponse, StreamState, cut_usage, describe_error
from ._common import count, nested, required, text, with_tier, within

__all__ = ["OpenAIStream", "chat_usage", "read_openai", "responses_usage"]

#: The unit (genai-prices' ``storage_searches_kcount``) that counts billed file search tool calls.
FILE_SEARCH_UNIT: Final = "storage_searches"
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_STARTED = frozenset({"response.created", "response.in_progress", "response.queued"})

# Events worth decoding: a usage object, an error, or a Responses lifecycle/output-item event. A key
# in JSON is a bare quote, which a string value can only contain escaped, so this never misses.
_INTERESTING = re.compile(
    rb'"usage"\s*:\s*\{|"error"\s*:|"type"\s*:\s*"(?:error|response\.(?:created|in_progress|queued'
    rb'|completed|incomplete|failed|output_item\.done))"'
)


def _reasoning_beside(u: dict[str, Any], prompt: object, completion: object, reasoning: object) -> bool:
    """Whether this server reports reasoning *beside* ``completion_tokens`` rather than inside it.

    OpenAI counts reasoning inside ``completion_tokens`` (``total = prompt + completion``). xAI's
    OpenAI-compatible API counts it separately ("reasoning token consumption will be counted
    separately from completion_tokens, but will be counted in the total_tokens"), and bills it as
    output: ``total = prompt + completion + reasoning`` says which one a body follows.
    """
    total = u.get("total_tokens")
    return (
        type(total) is int
        and type(prompt) is int
        and type(completion) is int
        and type(reasoning) is int
        and reasoning > 0
        and total == prompt + completion + reasoning
    )


def chat_usage(u: Any, at: str) -> Usage:
    """Chat Completions usage. This is on the per-call metering path: an optimistic fast path for
    well-formed dicts, and the checked path (which names the offending field) for anything else."""
    if type(u) is dict:
        prompt, completion = u.get("prompt_tokens"), u.get("completion_tokens")
        details, more = u.get("prompt_tokens_details"), u.get("completion_tokens_details")
        cached = write = audio_in = image_in = reasoning = audio_out = 0
        if type(details) is dict:
            cached, write = details.get("cached_tokens", 0), details.get("cache_write_tokens", 0)
            audio_in, image_in = details.get("audio_tokens", 0), details.get("image_tokens", 0)
        if type(more) is dict:
            reasoning, audio_out = more.get("reasoning_tokens", 0), more.get("audio_tokens", 0)
            if reasoning and _reasoning_beside(u, prompt, completion, reasoning):
                completion += reasoning
        if (
            type(prompt) is int
            and type(completion) is int
            and type(cached) is int
            and type(write) is int
            and type(audio_in) is int
            and type(image_in) is int
            and type(reasoning) is int
            and type(audio_out) is int
            and (details is None or type(details) is dict)
            and (more is None or type(more) is dict)
            and cached >= 0
            and write >= 0
            and cached + write <= prompt
            and 0 <= audio_in <= prompt
            and 0 <= image_in <= prompt
            and 0 <= reasoning <= completion
            and 0 <= audio_out <= completion
        ):
            return Usage(
                input_tokens=prompt,
                cache_read_tokens=cached,
                cache_write_tokens=write,
                input_audio_tokens=audio_in,
                input_image_tokens=image_in,
                output_tokens=completion,
                reasoning_tokens=reasoning,
                output_audio_tokens=audio_out,
            )
    return _chat_usage_checked(u, at)


def _chat_usage_checked(u: Any, at: str) -> Usage:
    if not isinstance(u, dict):
        raise InvalidUsage(f"must be an object, got {type(u).__name__}", field=at)
    prompt = required(u, "prompt_tokens", at)
    completion = required(u, "completion_tokens", at)
    cached = write = audio_in = image_in = reasoning = audio_out = 0
    details = nested(u, "prompt_tokens_details", at)
    if details:
        where = at + ".prompt_tokens_details"
        cached = count(details, "cached_tokens", where)
        write = count(details, "cache_write_tokens", where)
        audio_in = count(details, "audio_tokens", where)
        image_in = count(details, "image_tokens", where)
        whole = at + ".prompt_tokens"
        within(cached, where + ".cached_tokens", prompt, whole)
        within(cached + write, where + ".cache_write_tokens (+ cached_tokens)", prompt, whole)
        within(audio_in, where + ".audio_tokens", prompt, whole)
        within(image_in, where + ".image_tokens", prompt, whole)
    details = nested(u, "completion_tokens_details", at)
    if details:
        where = at + ".completion_tokens_details"
        reasoning = count(details, "reasoning_tokens", where)
        audio_out = count(details, "audio_tokens", where)
        if _reasoning_beside(u, prompt, completion, reasoning):
            completion += reasoning
        within(reasoning, where + ".reasoning_tokens", completion, at + ".completion_tokens")
        within(audio_out, where + ".audio_tokens", completion, at + ".completion_tokens")
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=cached,
        cache_write_tokens=write,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_tokens=completion,
        reasoning_tokens=reasoning,
        output_audio_tokens=audio_out,
    )


def responses_usage(u: Any, at: str, web_searches: int = 0, file_searches: int = 0) -> Usage:
    if not isinstance(u, dict):
        raise InvalidUsage(f"must be an object, got {type(u).__name__}", field=at)
    inp = required(u, "input_tokens", at)
    out = required(u, "output_tokens", at)
    cached = write = reasoning = 0
    details = nested(u, "input_tokens_details", at)
    if details:
        where = at + ".input_tokens_details"
        cached = count(details, "cached_tokens", where)
        write = count(details, "cache_write_tokens", where)
        within(cached, where + ".cached_tokens", inp, at + ".input_tokens")
        within(cached + write, where + ".cache_write_tokens (+ cached_tokens)", inp, at + ".input_tokens")
    details = nested(u, "output_tokens_details", at)
    if details:
        reasoning = count(details, "reasoning_tokens", at + ".output_tokens_details")
        within(reasoning, at + ".output_tokens_details.reasoning_tokens", out, at + ".output_tokens")
    return Usage(
        input_tokens=inp,
        cache_read_tokens=cached,
        cache_write_tokens=write,
        output_tokens=out,
        reasoning_tokens=reasoning,
        web_searches=web_searches,
        **_file_search_units(file_searches),
    )


def _file_search_units(file_searches: int) -> dict[str, Any]:
    return {"units": {FILE_SEARCH_UNIT: file_searches}} if file_searches else {}


def _tool_calls(output: object, at: str) -> tuple[int, int]:
    """The ``web_search_call`` and ``file_search_call`` output items: tool calls billed per call."""
    if output is None:
        return 0, 0
    if not isinstance(output, list):
        raise InvalidUsage(f"must be a list of output items, got {type(output).__name__}", field=at)
    web = files = 0
    for item in output:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "web_search_call":
            web += 1
        elif kind == "file_search_call":
            files += 1
    return web, files


def _detect(body: Mapping[str, Any]) -> str:
    kind = body.get("object")
    if kind in ("chat.completion", "chat.completion.chunk"):
        return "chat"
    if kind == "text_completion":
        return "completions"
    if kind == "response":
        return "responses"
    if kind == "list":
        data = body.get("data")
        if isinstance(data, list) and all(
            isinstance(d, Mapping) and d.get("object") == "embedding" for d in data
        ):
            return "embeddings"
    # Some OpenAI-compatible servers omit ``object``; the usage shape still tells chat from responses.
    usage = body.get("usage")
    if isinstance(usage, Mapping):
        if "completion_tokens" in usage:
            return "chat"
        if "input_tokens" in usage and "output_tokens" in usage:
            return "responses"
    raise InvalidUsage(
        f"cannot tell which OpenAI API produced this body (object={kind!r}); pass api='chat',"
        " 'responses' or 'embeddings'",
        field="object",
    )


def read_openai(body: dict[str, Any], api: str | None, header: object = None) -> ParsedResponse:
    """``header``: the tier an ``x-gemini-service-tier`` header names (Gemini's OpenAI-compatible
    endpoint), used when the body names none."""
    if api is None:
        api = "chat" if body.get("object") == "chat.completion" else _detect(body)
    raw = body.get("usage")
    if raw is None:
        raise InvalidUsage(f"is missing: the {api} response reports no usage", field="usage")
    if api in ("chat", "completions"):
        usage = chat_usage(raw, "usage")
    elif api == "responses":
        usage = responses_usage(raw, "usage", *_tool_calls(body.get("output"), "output"))
    else:  # embeddings: only input is billed
        if not isinstance(raw, dict):
            raise InvalidUsage(f"must be an object, got {type(raw).__name__}", field="usage")
        usage = Usage(input_tokens=required(raw, "prompt_tokens", "usage"))
    model, rid = body.get("model"), body.get("id")
    return ParsedResponse(
        with_tier(usage, header if (tier := body.get("service_tier")) is None else tier),
        model if type(model) is str else None,
        rid if type(rid) is str else None,
    )


class OpenAIStream(StreamState):
    """Chat chunks or Responses events (told apart per event: Responses events have a ``type``)."""

    def __init__(self, api: str | None) -> None:
        super().__init__()
        if api == "embeddings":
            raise InvalidUsage("embeddings do not stream; use usage_from_response", field="api")
        self._raw: Any = None  # latest raw usage object, validated in usage()
        self._label = "usage"
        self._responses = api == "responses"
        self._final = False  # the provider's last word on usage has been seen
        self._web_seen: set[str] = set()  # web_search_call items seen so far (lower bound if cut)
        self._files_seen: set[str] = set()  # file_search_call items, likewise
        self._calls_final: tuple[int, int] | None = None  # (web, file) searches of the terminal event

    def wants(self, data: bytes) -> bool:
        return self.model is None or _INTERESTING.search(data) is not None

    def on_event(self, event: dict[str, Any], label: str) -> None:
        kind = event.get("type")
        if isinstance(kind, str):
            self._responses = True
            self._on_responses_event(kind, event, label)
            return
        if "error" in event and "choices" not in event:
            self.provider_error, self.done = describe_error(event["error"]), True
            return
        if self.model is None:
            self.model, self.response_id = text(event, "model"), text(event, "id")
        tier = event.get("service_tier")
        if tier is not None:
            self.service_tier = tier
        usage = event.get("usage")
        if usage is not None:
            self._raw, self._label = usage, f"{label}.usage"
            # The usage-only final chunk has no choices; a chunk with choices and usage is a
            # running total (continuous usage stats) and only final once [DONE] arrives.
            if not event.get("choices"):
                self._final = True

    def _on_responses_event(self, kind: str, event: dict[str, Any], label: str) -> None:
        if kind == "error":
            self.provider_error, self.done = describe_error(event), True
            return
        if kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, Mapping):
                tool = item.get("type")
                ids = {"web_search_call": self._web_seen, "file_search_call": self._files_seen}.get(
                    tool if isinstance(tool, str) else ""
                )
                if ids is not None:
                    ids.add(str(item.get("id") or len(ids)))
            return
        if kind not in _TERMINAL and kind not in _STARTED:
            return
        response = event.get("response")
        if not isinstance(response, dict):
            raise InvalidUsage("must be an object", field=f"{label}.response")
        self.model = text(response, "model") or self.model
        self.response_id = text(response, "id") or self.response_id
        if response.get("service_tier") is not None:
            self.service_tier = response["service_tier"]
        if kind in _TERMINAL:
            self.done = True
            self._calls_final = _tool_calls(response.get("output"), f"{label}.response.output")
            if response.get("usage") is not None:
                self._raw, self._label, self._final = response["usage"], f"{label}.response.usage", True
            elif kind == "response.failed":
                why = describe_error(response.get("error"))
                self.provider_error = f"{why} (response.failed without usage)"

    def on_done_marker(self) -> None:
        self.done = True
        if self._raw is not None:
            self._final = True

    def usage(self) -> Usage:
        web, files = self._calls_final or (len(self._web_seen), len(self._files_seen))
        if self._raw is not None:
            if self._responses:
                usage = responses_usage(self._raw, self._label, web, files)
            else:
                usage = chat_usage(self._raw, self._label)
            return usage if self._final else cut_usage(usage, "the last usage seen was a running total")
        partial = Usage(web_searches=web, **_file_search_units(files)) if web or files else None
        if self.provider_error is not None:
            return cut_usage(partial, f"provider error in the stream: {self.provider_error}")
        if self.done and not self._responses:
            return cut_usage(
                partial,
                "the chat stream finished without a usage chunk; request one with"
                ' stream_options={"include_usage": true}',
            )
        return cut_usage(partial, "no usage event was received")
