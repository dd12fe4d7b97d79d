"""CLIP vision tower with LLaVA's feature selection.

LLaVA takes the hidden states of layer `mm_vision_select_layer` (-2 for LLaVA-1.5) and drops the
CLS token ("patch") or keeps it ("cls_patch"). The tower runs only the layers before that one
(LLaVA-1.5: 23 of CLIP ViT-L's 24; the last layer and the post-norm would be computed for nothing),
over all images of a call in one batch; its attention is CLIP's own (`config._attn_implementation`,
sdpa by default: no mask, so on CUDA torch picks its flash or memory-efficient kernel).
"""

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class CLIPVisionTower(nn.Module):
    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"unknown mm_vision_select_feature {select_feature!r}: expected 'patch' or 'cls_patch'")
        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= select_layer <= n_layers:
            raise ValueError(f"mm_vision_select_layer {select_layer} is outside a {n_layers}-layer vision tower")
        self.select_layer = select_layer
        # hidden_states[k] of CLIP's output = the embeddings (pre-norm) after k layers: run k of them
        self.layers_run = select_layer if select_layer >= 0 else n_layers + 1 + select_layer
        self.select_feature = select_feature
        # Attribute name `vision_tower` gives the checkpoint keys `model.vision_tower.vision_tower.*`.
        self.vision_tower = CLIPVisionModel(config)
        self.vision_tower.requires_grad_(False)

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + (1 if self.select_feature == "cls_patch" else 0)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.embeddings.patch_embedding.weight.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixel values -> (N, num_tokens, hidden) features, in the input's dtype."""
        tower = self.vision_tower
        hidden = tower.pre_layrnorm(tower.embeddings(images.to(device=self.device, dtype=self.dtype)))
        for layer in tower.encoder.layers[: self.layers_run]:  # (N, 1 + num_patches, C) throughout
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        if self.select_feature == "patch":
            hidden = hidden[:, 1:]  # drop CLS
        return hidden.to(images.dtype)
