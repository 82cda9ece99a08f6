"""The HTTP layer's request bodies (OpenAI's shapes, checked strictly) and response objects.

Requests are validated with strict types (no "5" for 5, no 1 for true, no NaN) and turned into
a protocol.GenerateRequest; unknown fields of the OpenAI routes are ignored (clients send
fields such as "user"), unsupported features set to anything but their default are refused.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from serving.protocol import Event, GenerateRequest, SamplingParams

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "DeployRequest",
    "chat_chunk",
    "chat_object",
    "completion_chunk",
    "completion_object",
    "error_body",
    "usage",
]

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
# the type an error body carries for each status (OpenAI's names where it has one)
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                403: "invalid_request_error", 404: "invalid_request_error",
                405: "invalid_request_error", 409: "invalid_request_error",
                413: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}


def error_body(status: int, message: str, *, param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _only(*allowed_then_why: Any) -> AfterValidator:
    """A field of a feature this server lacks: only its default value(s) are accepted."""
    *allowed, why = allowed_then_why

    def check(v):
        if v not in allowed:  # strict types: no True for 1 gets this far
            raise ValueError(why)
        return v

    return AfterValidator(check)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """The fields completions and chat share."""

    model: str = Field(min_length=1, max_length=256)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1, le=_INT32, description="extension; 0 or -1: off")
    seed: int | None = Field(None, ge=-_INT64 - 1, le=_INT64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, _only(1, "only n=1 is supported")] = 1
    presence_penalty: Annotated[float, _only(0, "presence_penalty is not supported")] = 0.0
    frequency_penalty: Annotated[float, _only(0, "frequency_penalty is not supported")] = 0.0

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are supported")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return v

    @model_validator(mode="after")
    def _stream_options(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def _params(self, max_tokens: int) -> SamplingParams:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature,
                              top_p=self.top_p, top_k=max(self.top_k, 0), seed=self.seed,
                              stop=stops)


class CompletionRequest(_Sampling):
    """POST /v1/completions. prompt: one string (or a list holding one string)."""

    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=_INT32)
    echo: Annotated[bool, _only(False, "echo is not supported")] = False
    logprobs: Annotated[int | None, _only(None, "logprobs is not supported")] = None
    best_of: Annotated[int | None, _only(None, 1, "best_of is not supported")] = None
    suffix: Annotated[str | None, _only(None, "suffix is not supported")] = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    def to_request(self, request_id: str) -> GenerateRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerateRequest(request_id=request_id, model=self.model,
                               params=self._params(self.max_tokens), prompt=prompt,
                               stream=self.stream)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=1024)]
    name: str | None = None

    def to_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "\n".join(
            p.text for p in self.content)
        # "developer" is what newer OpenAI clients call the system message
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1, max_length=4096)
    max_tokens: int | None = Field(None, ge=1, le=_INT32)
    max_completion_tokens: int | None = Field(None, ge=1, le=_INT32)
    logprobs: Annotated[bool | None, _only(None, False, "logprobs is not supported")] = None
    top_logprobs: Annotated[int | None, _only(None, "top_logprobs is not supported")] = None
    tools: Annotated[list[Any] | None, _only(None, [], "tools are not supported")] = None

    def to_request(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        limit = self.max_completion_tokens or self.max_tokens or default_max_tokens
        return GenerateRequest(request_id=request_id, model=self.model,
                               params=self._params(limit),
                               messages=tuple(m.to_dict() for m in self.messages),
                               stream=self.stream)


class DeployRequest(BaseModel):
    """POST /v1/deployments: a model's checkpoint path and its scaling settings (unset:
    the controller's defaults)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    path: str = Field(min_length=1, max_length=4096)
    min_instances: int | None = Field(None, ge=0, le=4096)
    max_instances: int | None = Field(None, ge=1, le=4096)
    target_concurrency: int | None = Field(None, ge=1, le=_INT32)
    keep_alive: float | None = Field(None, ge=0, le=10**9)
    max_prompt_tokens: int | None = Field(None, ge=1, le=_INT32)
    max_tokens: int | None = Field(None, ge=1, le=_INT32)
    queue_limit: int | None = Field(None, ge=0, le=_INT32)

    @field_validator("name")
    @classmethod
    def _segments(cls, v: str) -> str:
        if any(part in ("", ".", "..") for part in v.split("/")):
            raise ValueError("a name must not hold empty, '.' or '..' segments")
        return v

    @model_validator(mode="after")
    def _bounds(self):
        lo, hi = self.min_instances, self.max_instances
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_instances {lo} is more than max_instances {hi}")
        return self

    def spec(self) -> dict:
        """The settings given, for controller.deploy(name, path, **spec)."""
        return self.model_dump(exclude={"name", "path"}, exclude_none=True)


def usage(done: Event) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def completion_object(rid: str, model: str, text: str, done: Event) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": done.finish_reason}],
            "usage": usage(done)}


def chat_object(rid: str, model: str, text: str, done: Event) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": done.finish_reason}],
            "usage": usage(done)}


def completion_chunk(rid: str, model: str, created: int, text: str | None,
                     finish_reason: str | None = None, usage: dict | None = None) -> dict:
    """One streamed completion chunk; text None: the usage chunk (no choices)."""
    choices = [] if text is None else [{"index": 0, "text": text, "logprobs": None,
                                        "finish_reason": finish_reason}]
    chunk = {"id": rid, "object": "text_completion", "created": created, "model": model,
             "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def chat_chunk(rid: str, model: str, created: int, delta: dict | None,
               finish_reason: str | None = None, usage: dict | None = None) -> dict:
    """One streamed chat chunk; delta None: the usage chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk
