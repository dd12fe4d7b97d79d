"""The engine contract: two verbs over token ids, and the rules every engine shares.

    generate(requests)      -> one Generation(token_ids, handle) per GenerationRequest, in order
    loglikelihood(requests) -> one Score(loss, n_tokens) per ScoringRequest, in order

A request holds token ids with IMAGE_TOKEN_INDEX (-200) once per entry of `images`; no text
crosses this line (prompts are rendered and answers detokenised by the caller: dualfocus.focus.text).
The keyword-only fields are hints an engine may use to share work; they never change a result:
`group` (requests of one group share their common prefix), `parent` (continue an earlier
generation's state), `keep_logprobs` and `expect_turns` (what later requests will reuse), and
`draft` (a guess of the next tokens, verified before it is kept: see `Draft`). The reference
engine ignores them. `Engine.generate` / `Engine.loglikelihood` check every request
(images vs markers, labels, parents, the model's positions) before a subclass runs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import torch
from PIL import Image

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128  # the original release generates up to 128 tokens per pass
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens tokens
    forced: tuple[int, ...] | None = None  # benchmarks: emit exactly these tokens (logits still computed)


# The tokens generated so far (the last one chosen but not yet fed) -> a guess of the tokens that
# follow it. An engine may feed the guess with that last token in one forward and keep the longest
# prefix equal to its own choices: greedy and forced outputs are unchanged by construction (a wrong
# guess costs columns, not tokens); sampled outputs (temperature > 0) ignore it.
Draft = Callable[[Sequence[int]], Sequence[int]]


@dataclass
class GenerationRequest:
    token_ids: Sequence[int]  # the prompt; IMAGE_TOKEN_INDEX once per image
    images: Sequence[Image.Image]
    params: SamplingParams = field(default_factory=SamplingParams)
    _: KW_ONLY
    group: Hashable | None = None
    parent: Handle | None = None  # from an earlier call of the same engine
    keep_logprobs: int = 0  # log p(token_ids[j]) for j < this may be labelled by a later request
    expect_turns: int = 0  # later turns about this long will continue this request: room to reserve
    draft: Draft | None = None


@dataclass
class Generation:
    token_ids: list[int]  # the new tokens, EOS included when it stopped there
    handle: Handle | None = None
    forwards: int = 0  # model forwards this generation took part in, its prompt's included


@dataclass
class ScoringRequest:
    input_ids: Sequence[int]  # IMAGE_TOKEN_INDEX once per image
    labels: Sequence[int]  # IGNORE_INDEX where not scored, else equal to input_ids; same length
    images: Sequence[Image.Image]
    _: KW_ONLY
    parent: Handle | None = None


@dataclass(frozen=True)
class Score:
    loss: float  # mean negative log-likelihood over the labelled tokens (LLaVA's per-sample loss)
    n_tokens: int


@dataclass(frozen=True, eq=False)
class Handle:
    """Where a later request may continue a generation: `state` of the call that made it, and
    the generation's place in it. The fast engine's state is that call's whole KV cache (every
    request of the call, all layers): it stays alive, on the device, as long as any handle does."""

    state: Any
    row: int = 0
    branch: int = 0


class ContextLengthError(ValueError):
    """A request that does not fit the model's positions, refused before any forward."""


class RequestError(ValueError):
    """A request that breaks the contract (images vs markers, labels, parents)."""


Request = GenerationRequest | ScoringRequest


class Engine(ABC):
    """Holds a loaded model; subclasses implement `_generate` and `_loglikelihood`.

    `tokenizer` is carried for callers that hold only an engine and must render prompts; the
    engine never tokenises or detokenises. It reads the EOS id from it once, to stop generating.
    """

    def __init__(self, model, tokenizer, image_processor):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.eos_token_id: int = tokenizer.eos_token_id

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        requests = list(requests)
        self.check(requests)
        return self._generate(requests) if requests else []

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        requests = list(requests)
        self.check(requests)
        return self._loglikelihood(requests) if requests else []

    @abstractmethod
    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    @abstractmethod
    def _loglikelihood(self, requests: list[ScoringRequest]) -> list[Score]: ...

    @property
    def device(self) -> torch.device:
        return self.model.text_device

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, H, W) in the vision tower's dtype, on its device."""
        return self.model.pixels(images, self.image_processor)

    # -- the rules both engines share -------------------------------------------------------------
    def check(self, requests: Sequence[Request]) -> None:
        """Refuse a batch that breaks the contract, before any forward."""
        for i, req in enumerate(requests):
            check_images(i, req)
            if isinstance(req, ScoringRequest):
                check_labels(i, req)
        check_parents(requests)
        self.check_context(requests)

    def check_context(self, requests: Sequence[Request]) -> None:
        """Refuse, before any forward, a request whose prompt + new tokens exceed max_position_embeddings.

        Past the model's positions an answer is garbage, silently; cutting the prompt instead (LLaVA-1.5's
        splice cuts at tokenizer_model_max_length, also in `generate`) drops the question's end and its
        "ASSISTANT:", so nothing is cut. New tokens count: their positions follow the prompt's, and
        refusing up front keeps the outcome independent of when the answer would stop.
        """
        limit, n_img = self.model.max_positions, self.model.num_image_tokens
        for req in requests:
            ids = prompt_ids(req)
            images = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
            prompt, new = len(ids) + images * (n_img - 1), max_new_tokens(req)
            if prompt + new > limit:
                raise ContextLengthError(
                    f"a prompt of {prompt} positions ({images} image(s) of {n_img} each) + {new} new tokens exceeds "
                    f"the model's {limit} positions (max_position_embeddings); shorten the question")


def prompt_ids(req: Request) -> list[int]:
    return list(req.input_ids if isinstance(req, ScoringRequest) else req.token_ids)


def max_new_tokens(req: Request) -> int:
    """Most tokens a request can generate (scoring requests: none)."""
    if isinstance(req, ScoringRequest):
        return 0
    return len(req.params.forced) if req.params.forced else req.params.max_new_tokens


def check_images(i: int, req: Request) -> None:
    markers = sum(1 for t in prompt_ids(req) if t == IMAGE_TOKEN_INDEX)
    if markers != len(req.images):
        raise RequestError(f"request {i}: prompt has {markers} <image> markers but {len(req.images)} images "
                           "were given")


def check_labels(i: int, req: ScoringRequest) -> None:
    if len(req.labels) != len(req.input_ids):
        raise RequestError(f"scoring request {i}: labels ({len(req.labels)}) and input_ids "
                           f"({len(req.input_ids)}) differ in length")
    bad = [j for j, (t, lab) in enumerate(zip(req.input_ids, req.labels)) if lab != IGNORE_INDEX and lab != t]
    if bad:
        raise RequestError(f"scoring request {i}: labels differ from input_ids at {bad[:5]}")


def check_parents(requests: Sequence[Request]) -> None:
    """A batch continues the handles of one earlier call (all of its requests do) or none."""
    parents = [r.parent for r in requests]
    if all(p is None for p in parents):
        return
    if any(p is None for p in parents) or len({id(p.state) for p in parents}) != 1:
        raise RequestError("a batch either continues one earlier call's handles (all of them) or none")
