"""The reference engine: the obvious loop, one request at a time, everything recomputed.

It is the executable specification the fast engine is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dualfocus.engine.base import Engine, Generation, GenerationRequest, Score, ScoringRequest, sample
from dualfocus.mm_utils import tokenizer_image_token


class ReferenceEngine(Engine):
    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            ids = torch.tensor([tokenizer_image_token(req.prompt, self.tokenizer)], device=self.device)
            embeds, mask, _, positions = self.model.prepare_inputs_labels_for_multimodal(
                ids, None, None, self.pixel_values(req.images)
            )
            generator = torch.Generator(device=self.device).manual_seed(req.params.seed)
            tokens = self._greedy_or_sampled(embeds, req, generator)
            out.append(Generation(self.decode(tokens), tokens))
        return out

    def _greedy_or_sampled(self, embeds: torch.Tensor, req: GenerationRequest, generator) -> list[int]:
        # Full recompute each step: no cache at all, the plainest possible definition.
        tokens: list[int] = []
        for _ in range(req.params.max_new_tokens):
            logits = self.model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
            token = int(sample(logits, req.params, generator)[0])
            tokens.append(token)
            if token == self.eos_token_id and not req.params.ignore_eos:
                break
            embeds = torch.cat([embeds, self.model.model.embed_tokens(torch.tensor([[token]], device=self.device))], 1)
        return tokens

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        out = []
        for req in requests:
            ids = torch.tensor([list(req.input_ids)], device=self.device)
            labels = torch.tensor([list(req.labels)], device=self.device)
            result = self.model(input_ids=ids, labels=labels, images=self.pixel_values(req.images), reduction="none")
            n = int((labels[:, 1:] != -100).sum())
            out.append(Score(float(result.loss[0]), n))
        return out
