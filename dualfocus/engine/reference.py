"""The reference engine: the obvious loop, one request at a time, each pass computed from scratch.

Within a pass it decodes with a KV cache, as LLaVA's `generate` does; across passes nothing is
shared (every pass re-encodes its images and re-reads its whole prompt), as the original release.
Its handles hold nothing but the call they came from (the parent rule is checked all the same).

It is the executable specification the fast engine is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from dualfocus.constants import IGNORE_INDEX
from dualfocus.engine.base import (
    Engine,
    Generation,
    GenerationRequest,
    Handle,
    SamplingParams,
    Score,
    ScoringRequest,
)
from dualfocus.engine.sampling import is_finished, pick_tokens


class ReferenceEngine(Engine):
    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        call = object()  # this call's identity, for the parent rule
        out = []
        for req in requests:
            embeds, _ = self._embed(req.token_ids, req.images)
            tokens = self._generate_tokens(embeds, req.params)  # one forward per token: it ignores drafts
            out.append(Generation(tokens, Handle(call), forwards=len(tokens)))
        return out

    def _embed(self, ids: Sequence[int], images, labels: Sequence[int] | None = None):
        """(T,) ids with one marker per image -> (1, T', C) embeddings and (1, T') labels, never truncated.

        The model's own splice also cuts at `tokenizer_model_max_length` (a training length, as LLaVA's);
        here `check_context` has refused what does not fit the positions, and nothing is cut.
        """
        features = list(self.model.image_features(self.pixel_values(images))) if images else []
        ids_t = torch.tensor(list(ids), device=self.device)
        labels_t = torch.tensor(list(labels), device=self.device) if labels is not None else None
        embeds, labels_t = self.model.splice_image_features(ids_t, features, labels_t)
        return embeds[None], (labels_t[None] if labels_t is not None else None)

    def _generate_tokens(self, embeds: torch.Tensor, params: SamplingParams) -> list[int]:
        """Prefill the prompt, then one token at a time with a KV cache (as LLaVA's generate)."""
        generator = torch.Generator(device=self.device).manual_seed(params.seed)
        cache = DynamicCache()
        tokens: list[int] = []
        while True:
            hidden = self.model.hidden_states(embeds, cache)
            logits = self.model.logits(hidden[:, -1]).float()
            token = pick_tokens(logits, [params], [len(tokens)], [generator])[0]
            tokens.append(token)
            if is_finished(token, len(tokens), params, self.eos_token_id):
                return tokens
            embeds = self.model.embed(torch.tensor([[token]], device=self.device))

    def _loglikelihood(self, requests: list[ScoringRequest]) -> list[Score]:
        out = []
        for req in requests:
            embeds, labels = self._embed(req.input_ids, req.images, req.labels)
            result = self.model(inputs_embeds=embeds, labels=labels, reduction="none")
            # An image marker's label is IGNORE_INDEX once its features are spliced in.
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            out.append(Score(float(result.loss[0]), n))
        return out
