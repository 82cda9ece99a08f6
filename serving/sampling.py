"""Picking the next token of each sequence of a batch from its logits.

Each sampled sequence draws from its own torch.Generator (seeded from SamplingParams.seed), and
its row is processed on its own, so what it draws does not depend on which other sequences
share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serving.protocol import SamplingParams

__all__ = ["check_params", "new_generator", "pick"]


def check_params(params: SamplingParams) -> str | None:
    """Why params cannot be served, or None when they can."""
    if not isinstance(params.max_tokens, int) or params.max_tokens < 1:
        return f"max_tokens must be a positive integer, not {params.max_tokens!r}"
    if not params.temperature >= 0:  # NaN too
        return f"temperature must be >= 0, not {params.temperature!r}"
    if not 0 < params.top_p <= 1:
        return f"top_p must be in (0, 1], not {params.top_p!r}"
    if not isinstance(params.top_k, int) or params.top_k < 0:
        return f"top_k must be an integer >= 0, not {params.top_k!r}"
    if params.seed is not None and not isinstance(params.seed, int):
        return f"seed must be an integer, not {params.seed!r}"
    return None


def new_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """The generator a sequence samples with: None for greedy, seeded when a seed is given."""
    if params.temperature == 0:
        return None
    gen = torch.Generator(device=device)
    if params.seed is None:
        gen.seed()  # non-deterministic
    else:
        gen.manual_seed(params.seed & 0xFFFF_FFFF_FFFF_FFFF)
    return gen


def pick(logits: torch.Tensor, params: Sequence[SamplingParams],
         generators: Sequence[torch.Generator | None]) -> list[int]:
    """The next token of each row of logits [batch, vocab] (one host sync for the batch)."""
    picked = logits.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled:
        picked = picked.clone()
        for i in sampled:
            picked[i] = _sample(logits[i], params[i], generators[i])
    return picked.tolist()


def _sample(row: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> torch.Tensor:
    row = row.float() / params.temperature
    if 0 < params.top_k < row.numel():
        kth = torch.topk(row, params.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if params.top_p < 1:
        probs, order = probs.sort(descending=True)
        beyond = probs.cumsum(0) - probs > params.top_p  # the first token is always kept
        probs = probs.masked_fill(beyond, 0)
        return order[torch.multinomial(probs, 1, generator=gen)][0]
    return torch.multinomial(probs, 1, generator=gen)[0]
