"""What the HTTP layer, the controller, the workers and the engine pass to each other.

Plain dataclasses only (no torch, no HTTP): they cross process boundaries by pickling, and the
simulator of serving.sim builds them too.

    HTTP (serving.api) --GenerateRequest--> Controller --(model, prompt ids, params)--> worker
    HTTP <--Event stream-- Controller <--Event stream-- worker (serving.engine emits them)

Checkpoints deployed for serving carry what a worker needs to run them in their ckpt index
metadata (so every tier holds it, whichever tier a load comes from), under the META_* keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "META_CONFIG",
    "META_GENERATION_CONFIG",
    "META_TOKENIZER",
    "META_TOKENIZER_CONFIG",
    "Event",
    "GenerateRequest",
    "SamplingParams",
    "ServingError",
]

#: checkpoint metadata keys (values are the JSON text of the Hugging Face files of that name)
META_CONFIG = "hf_config"  # config.json: the model's architecture (ckpt.convert's key)
META_TOKENIZER = "serving.tokenizer"  # tokenizer.json (Hugging Face tokenizers)
META_TOKENIZER_CONFIG = "serving.tokenizer_config"  # tokenizer_config.json (chat template, ...)
META_GENERATION_CONFIG = "serving.generation_config"  # generation_config.json (eos ids, ...)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; top_k 0 and top_p 1 switch those off."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None  # same seed, same prompt, same model -> same output
    stop: tuple[str, ...] = ()  # the output ends before the first of these strings


@dataclass(frozen=True)
class GenerateRequest:
    """One completion or chat request, checked by the HTTP layer. Exactly one of prompt and
    messages is set (messages: [{"role": ..., "content": ...}, ...])."""

    request_id: str
    model: str
    params: SamplingParams
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    stream: bool = False


@dataclass(frozen=True)
class Event:
    """One step of a request's life, in order: any number of "wait" (a cold start or a queue
    is in the way; the HTTP layer turns them into SSE comments), then "token"s, then exactly
    one "done" or "error".

    token: text is the new text (may be "" while a stop string might still match); index is
    the place of its first token id in the output (0, 1, ...: a relay that switches workers
    mid-request checks it, see serving.migration).
    done: finish_reason "stop" (end of sequence or a stop string) or "length"; usage counts.
    A worker's "done" with finish_reason "migrated" ends the request there but not for the
    client: token_ids are every id generated so far, info["generator"] the sampler's state
    (see serving.migration); the controller never passes it on.
    error: status is the HTTP status the client should see (400 bad input, 429 queue full
    with retry_after seconds, 503 unavailable / worker died), message says why.
    """

    kind: Literal["wait", "token", "done", "error"]
    text: str = ""
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 0
    message: str = ""
    retry_after: float | None = None
    info: dict = field(default_factory=dict)  # "wait": {"reason": ...}; cold start details
    index: int | None = None  # token: see above


class ServingError(Exception):
    """A request refused before it started, with the HTTP status the client should see."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
