"""LLaVA-1.5: a CLIP vision tower and a projector in front of LlamaForCausalLM.

Module names reproduce the original LLaVA checkpoint layout, so its weights load as they are:
`model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`, `model.mm_projector.*`,
`model.vision_tower.vision_tower.*` (when a checkpoint carries the tower).

Inputs follow LLaVA: `input_ids` hold IMAGE_TOKEN_INDEX (-200) once per image; the model splices
the image's projected features (num_tokens rows) in its place.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.mm_utils import process_images
from dualfocus.model.projector import build_projector
from dualfocus.model.vision_tower import CLIPVisionTower


def cache_kwarg(forward) -> str:
    """The name under which `forward` takes a KV cache: transformers renamed `past_key_values` to
    `cache` (5.2x) in LlamaModel and its decoder layers alike; pass whichever it takes."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


CACHE_KWARG = cache_kwarg(LlamaModel.forward)


class LlavaLlamaConfig(LlamaConfig):
    """LlamaConfig plus LLaVA's flat `mm_*` fields.

    Saved as model_type "llava" (the original layout); the class keeps its own model_type so that
    transformers' llava-hf key conversions never apply to it.
    `mm_vision_config` (a CLIPVisionConfig dict) is ours: it makes a checkpoint describe its own
    tower; when absent the builder reads the config of `mm_vision_tower`.
    """

    model_type = "dualfocus_llava_llama"

    def __init__(
        self,
        mm_vision_tower: str | None = None,
        mm_vision_config: dict | None = None,
        mm_hidden_size: int | None = None,
        mm_projector_type: str = "linear",
        mm_vision_select_layer: int = -2,
        mm_vision_select_feature: str = "patch",
        image_aspect_ratio: str = "pad",
        mm_use_im_start_end: bool = False,
        mm_use_im_patch_token: bool = False,
        tokenizer_model_max_length: int | None = None,
        tokenizer_padding_side: str = "right",
        **kwargs,
    ):
        self.mm_vision_tower = mm_vision_tower
        self.mm_vision_config = mm_vision_config
        self.mm_hidden_size = mm_hidden_size
        self.mm_projector_type = mm_projector_type
        self.mm_vision_select_layer = mm_vision_select_layer
        self.mm_vision_select_feature = mm_vision_select_feature
        self.image_aspect_ratio = image_aspect_ratio
        self.mm_use_im_start_end = mm_use_im_start_end
        self.mm_use_im_patch_token = mm_use_im_patch_token
        self.tokenizer_model_max_length = tokenizer_model_max_length
        self.tokenizer_padding_side = tokenizer_padding_side
        super().__init__(**kwargs)


class LlavaLlamaForCausalLM(LlamaForCausalLM):
    config_class = LlavaLlamaConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: LlavaLlamaConfig):
        super().__init__(config)
        if config.mm_vision_config is None:
            raise ValueError("config.mm_vision_config is not set: the vision tower's CLIPVisionConfig is needed")
        vision_config = CLIPVisionConfig(**config.mm_vision_config)
        if config.mm_hidden_size not in (None, vision_config.hidden_size):
            raise ValueError(
                f"mm_hidden_size {config.mm_hidden_size} != vision tower hidden_size {vision_config.hidden_size}"
            )
        self.model.vision_tower = CLIPVisionTower(
            vision_config, config.mm_vision_select_layer, config.mm_vision_select_feature
        )
        self.model.mm_projector = build_projector(
            config.mm_projector_type, vision_config.hidden_size, config.hidden_size
        )

    # -- the narrow interface the engines use (they never reach into `self.model`) -------------
    def get_vision_tower(self) -> CLIPVisionTower:
        return self.model.vision_tower

    @property
    def num_image_tokens(self) -> int:
        """Rows of features one image becomes (576 for CLIP ViT-L/14-336 patches)."""
        return self.model.vision_tower.num_tokens

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    @property
    def text_device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def pixels(self, images, image_processor) -> torch.Tensor:
        """PIL images -> (N, 3, H, W) in the vision tower's dtype and device (LLaVA's `process_images`)."""
        vt = self.model.vision_tower
        if not images:  # a text-only request: process_images cannot stack an empty list
            size = vt.config.image_size
            return torch.empty(0, 3, size, size, device=vt.device, dtype=vt.dtype)
        return process_images(list(images), image_processor, self.config).to(vt.device, vt.dtype)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels -> (N, num_image_tokens, hidden) features in the language model's dtype."""
        features = self.model.vision_tower(pixels.to(self.model.vision_tower.dtype))
        proj = self.model.mm_projector
        proj_dtype = next(proj.parameters()).dtype if any(True for _ in proj.parameters()) else features.dtype
        return proj(features.to(proj_dtype)).to(self.model.embed_tokens.weight.dtype)

    encode_images = image_features  # LLaVA's name

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., T) token ids (>= 0) -> (..., T, hidden)."""
        return self.model.embed_tokens(ids)

    @property
    def decoder_layers(self):
        return self.model.layers

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor):
        """(cos, sin) for `positions` (R, S), each (R, S, head_dim)."""
        return self.model.rotary_emb(hidden, positions)

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def hidden_states(self, embeds: torch.Tensor, cache) -> torch.Tensor:
        """The language model over (B, T, C) embeddings, continuing `cache` (updated in place)."""
        return self.model(inputs_embeds=embeds, use_cache=True, **{CACHE_KWARG: cache}).last_hidden_state

    def splice_image_features(
        self, ids: torch.Tensor, features: list[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sample: (T,) ids with k image markers + k feature blocks -> (T', hidden) embeddings.

        Image positions get IGNORE_INDEX labels.
        """
        positions = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(positions) != len(features):
            raise ValueError(f"sample has {len(positions)} image tokens but {len(features)} images")
        text_embeds = self.model.embed_tokens(ids.clamp(min=0))  # markers embedded as 0, replaced below
        pieces, label_pieces, start = [], [], 0
        for pos, feat in zip(positions, features):
            pieces += [text_embeds[start:pos], feat.to(text_embeds.dtype)]
            if labels is not None:
                label_pieces += [labels[start:pos], labels.new_full((feat.shape[0],), IGNORE_INDEX)]
            start = pos + 1
        pieces.append(text_embeds[start:])
        if labels is not None:
            label_pieces.append(labels[start:])
        return torch.cat(pieces), (torch.cat(label_pieces) if labels is not None else None)

    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        images: torch.Tensor | list[torch.Tensor],
        padding_side: str | None = None,
    ):
        """LLaVA's splice for a batch: returns (inputs_embeds, attention_mask, labels, position_ids).

        `images` are consumed in order: the k-th image marker of the batch takes the k-th image.
        Padding (from `attention_mask`) is removed before splicing and re-applied after.
        """
        if isinstance(images, (list, tuple)):
            images = torch.cat([im if im.ndim == 4 else im[None] for im in images])
        n_markers = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        if n_markers != images.shape[0]:
            raise ValueError(f"batch has {n_markers} image tokens but {images.shape[0]} images were given")
        features = list(self.encode_images(images)) if n_markers else []
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        embeds, new_labels, k = [], [], 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids = input_ids[b][keep]
            n = int((ids == IMAGE_TOKEN_INDEX).sum())
            e, lab = self.splice_image_features(ids, features[k : k + n], labels[b][keep] if labels is not None else None)
            k += n
            max_len = self.config.tokenizer_model_max_length
            if max_len is not None:
                e, lab = e[:max_len], (lab[:max_len] if lab is not None else None)
            embeds.append(e)
            new_labels.append(lab)
        return pad_embeddings(embeds, new_labels if labels is not None else None,
                              padding_side or self.config.tokenizer_padding_side)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: torch.Tensor | list[torch.Tensor] | None = None,
        reduction: str = "mean",
        logits_to_keep: int = 0,
        cache=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """LLaVA's forward. `reduction="none"` gives each sample's mean loss over its labelled tokens."""
        if images is not None and input_ids is not None and inputs_embeds is None:
            inputs_embeds, attention_mask, labels, position_ids = self.prepare_inputs_labels_for_multimodal(
                input_ids, attention_mask, labels, images
            )
            input_ids = None
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_KWARG: cache if cache is not None else past_key_values},
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, reduction)
        # By the name this transformers uses: the old name still works but warns (5.2x).
        new_cache = getattr(out, CACHE_KWARG, None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_KWARG: new_cache})

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, images=None, attention_mask=None, **kwargs):
        """LLaVA's generate: with `images`, embeds the prompt (left-padded) and returns only new tokens."""
        if images is None:
            return super().generate(inputs, attention_mask=attention_mask, **kwargs)
        embeds, attention_mask, _, _ = self.prepare_inputs_labels_for_multimodal(
            inputs, attention_mask, None, images, padding_side="left"
        )
        return super().generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)


def pad_embeddings(embeds: list[torch.Tensor], labels: list[torch.Tensor] | None, padding_side: str):
    """Stack variable-length (T_i, C) embeddings: returns (B, T, C), mask (B, T), labels, positions."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, width = len(embeds), max(e.shape[0] for e in embeds)
    ref = embeds[0]
    out = ref.new_zeros(batch, width, ref.shape[-1])
    mask = torch.zeros(batch, width, dtype=torch.long, device=ref.device)
    out_labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=ref.device) if labels else None
    for b, e in enumerate(embeds):
        n = e.shape[0]
        sl = slice(width - n, width) if padding_side == "left" else slice(0, n)
        out[b, sl], mask[b, sl] = e, 1
        if out_labels is not None:
            out_labels[b, sl] = labels[b]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return out, mask, out_labels, positions


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross entropy. "mean": over all labelled tokens of the batch (LLaVA's training
    loss); "none": per sample, the mean over that sample's labelled tokens (B,) (DualFocus scoring)."""
    shift_logits = logits[:, :-1].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:].to(logits.device)  # (B, T-1)
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view(shift_labels.shape)
    labelled = shift_labels.ne(IGNORE_INDEX)
    if reduction == "mean":
        return token_loss.sum() / labelled.sum()
    if reduction == "none":
        return token_loss.sum(-1) / labelled.sum(-1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
