"""What the DualFocus pipeline asks of an engine: two verbs, `generate` and `loglikelihood`.

Both engines compute the same function; the fast one also takes hints it may use to share work:
`group` (requests of one group share their common prefix) and `parent` (continue from an earlier
generation's state). Hints never change results: the reference engine ignores them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.mm_utils import process_images, tokenizer_image_token


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128  # the original release generates up to 128 tokens per pass
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens tokens
    forced: tuple[int, ...] | None = None  # benchmarks: emit exactly these tokens (logits still computed)


@dataclass
class GenerationRequest:
    prompt: str  # a templated prompt with one "<image>" per entry of `images`
    images: Sequence[Image.Image]
    params: SamplingParams = field(default_factory=SamplingParams)
    group: Hashable | None = None
    parent: Any = None  # a Generation.handle from an earlier call of the same engine


@dataclass
class Generation:
    text: str  # decoded, stripped of the stop string
    token_ids: list[int]
    handle: Any = None


@dataclass
class ScoringRequest:
    input_ids: Sequence[int]  # IMAGE_TOKEN_INDEX (-200) once per image
    labels: Sequence[int]  # IGNORE_INDEX (-100) where not scored; same length as input_ids
    images: Sequence[Image.Image]
    parent: Any = None


@dataclass(frozen=True)
class Score:
    loss: float  # mean negative log-likelihood over the labelled tokens (LLaVA's per-sample loss)
    n_tokens: int


class ContextLengthError(ValueError):
    """A request that does not fit the model's positions, refused before any forward."""


class Engine(ABC):
    """Holds a loaded model; subclasses implement the two verbs."""

    def __init__(self, model, tokenizer, image_processor, stop_str: str | None = "</s>"):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.stop_str = stop_str

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    @abstractmethod
    def loglikelihood(self, requests: Sequence[ScoringRequest]) -> list[Score]: ...

    @property
    def device(self) -> torch.device:
        return self.model.model.embed_tokens.weight.device

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, H, W) in the vision tower's dtype, on the model's device."""
        vt = self.model.model.vision_tower
        if not images:  # a text-only request: process_images cannot stack an empty list
            size = vt.config.image_size
            return torch.empty(0, 3, size, size, device=vt.device, dtype=vt.dtype)
        return process_images(list(images), self.image_processor, self.model.config).to(vt.device, vt.dtype)

    def request_ids(self, req: GenerationRequest | ScoringRequest) -> list[int]:
        """Token ids with one IMAGE_TOKEN_INDEX per image."""
        if isinstance(req, ScoringRequest):
            return list(req.input_ids)
        return tokenizer_image_token(req.prompt, self.tokenizer)

    def check_context(self, requests: Sequence[GenerationRequest | ScoringRequest]) -> None:
        """Refuse, before any forward, a request whose prompt + new tokens exceed max_position_embeddings.

        Past the model's positions an answer is garbage, silently; cutting the prompt instead (LLaVA-1.5's
        splice cuts at tokenizer_model_max_length, also in `generate`) drops the question's end and its
        "ASSISTANT:", so nothing is cut. New tokens count: their positions follow the prompt's, and
        refusing up front keeps the outcome independent of when the answer would stop.
        """
        limit = self.model.config.max_position_embeddings
        n_img = self.model.model.vision_tower.num_tokens
        for req in requests:
            ids = self.request_ids(req)
            images = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
            prompt, new = len(ids) + images * (n_img - 1), max_new_tokens(req)
            if prompt + new > limit:
                raise ContextLengthError(
                    f"a prompt of {prompt} positions ({images} image(s) of {n_img} each) + {new} new tokens exceeds "
                    f"the model's {limit} positions (max_position_embeddings); shorten the question")

    def decode(self, token_ids: Sequence[int]) -> str:
        """LLaVA's post-processing: skip special tokens, strip, drop a trailing stop string."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
        if self.stop_str and text.endswith(self.stop_str):
            text = text[: -len(self.stop_str)]
        return text.strip()


def max_new_tokens(req: GenerationRequest | ScoringRequest) -> int:
    """Most tokens a request can generate (scoring requests: none)."""
    params = getattr(req, "params", None)
    if params is None:
        return 0
    return len(params.forced) if params.forced else params.max_new_tokens


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
