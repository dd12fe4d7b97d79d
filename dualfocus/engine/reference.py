"""The reference engine: the obvious loop, one request at a time, each pass computed from scratch.

Within a pass it decodes with a KV cache, as LLaVA's `generate` does; across passes nothing is
shared (every pass re-encodes its images and re-reads its whole prompt), as the original release.

It is the executable specification the fast engine is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.engine.base import (
    Engine,
    Generation,
    GenerationRequest,
    SamplingParams,
    Score,
    ScoringRequest,
    is_finished,
    pick_tokens,
)
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.llava_llama import CACHE_KWARG


class ReferenceEngine(Engine):
    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            ids = torch.tensor([tokenizer_image_token(req.prompt, self.tokenizer)], device=self.device)
            embeds, _, _, _ = self.model.prepare_inputs_labels_for_multimodal(
                ids, None, None, self.pixel_values(req.images)
            )
            tokens = self._decode(embeds, req.params)
            out.append(Generation(self.decode(tokens), tokens))
        return out

    def _decode(self, embeds: torch.Tensor, params: SamplingParams) -> list[int]:
        """Prefill the prompt, then one token at a time with a KV cache (as LLaVA's generate)."""
        generator = torch.Generator(device=self.device).manual_seed(params.seed)
        cache = DynamicCache()
        tokens: list[int] = []
        while True:
            hidden = self.model.model(inputs_embeds=embeds, use_cache=True, **{CACHE_KWARG: cache}).last_hidden_state
            logits = self.model.lm_head(hidden[:, -1]).float()
            token = pick_tokens(logits, [params], [len(tokens)], [generator])[0]
            tokens.append(token)
            if is_finished(token, len(tokens), params, self.eos_token_id):
                return tokens
            embeds = self.model.model.embed_tokens(torch.tensor([[token]], device=self.device))

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        out = []
        for req in requests:
            ids = torch.tensor([list(req.input_ids)], device=self.device)
            labels = torch.tensor([list(req.labels)], device=self.device)
            result = self.model(input_ids=ids, labels=labels, images=self.pixel_values(req.images), reduction="none")
            # An image marker's label is replaced by IGNORE_INDEX when its features are spliced in.
            n = int(((labels[:, 1:] != IGNORE_INDEX) & (labels[:, 1:] != IMAGE_TOKEN_INDEX)).sum())
            out.append(Score(float(result.loss[0]), n))
        return out
