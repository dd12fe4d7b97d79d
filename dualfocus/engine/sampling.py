"""Choosing the next token and knowing when to stop: the same rules in both engines."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dualfocus.engine.base import SamplingParams


def pick_tokens(logits: torch.Tensor, params: Sequence[SamplingParams], steps: Sequence[int], generators) -> list[int]:
    """(N, V) logits of N sequences -> their next tokens: forced, greedy, or sampled."""
    picked = logits.argmax(-1).tolist()
    for j, (p, step) in enumerate(zip(params, steps)):
        if p.forced is not None:
            picked[j] = p.forced[step]
        elif p.temperature > 0:
            picked[j] = int(sample(logits[j : j + 1], p, generators[j])[0])
    return picked


def is_finished(token: int, n_generated: int, params: SamplingParams, eos_token_id: int) -> bool:
    if params.forced is not None:
        return n_generated >= len(params.forced)
    return (token == eos_token_id and not params.ignore_eos) or n_generated >= params.max_new_tokens


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(N, V) logits -> (N,) token ids: greedy at temperature 0, else temperature + top-p."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > params.top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
