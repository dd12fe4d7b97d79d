"""Tiny random LLaVA-1.5 checkpoints, written in the real layouts, for tests, demos and benchmarks.

They load through `load_pretrained_model` exactly like released checkpoints. Their weights are
random: answers produced with them mean nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from dualfocus.model.checkpoint_io import save_state_dict
from dualfocus.model.image_processor import clip_image_processor
from dualfocus.model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny LLaVA: vision_* for the CLIP tower, text_* for Llama."""

    image_size: int = 28  # 2x2 patches of 14 px -> 4 image tokens
    patch_size: int = 14
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    projector: str = "mlp2x_gelu"
    select_layer: int = -2
    select_feature: str = "patch"
    initializer_range: float = 0.1  # peaked logits: greedy choices are far from ties
    max_position_embeddings: int = 4096


def clip_config(spec: TinySpec) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=spec.vision_hidden * 2,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=spec.image_size, patch_size=spec.patch_size, hidden_act="quick_gelu",
        projection_dim=spec.vision_hidden,
    )


def image_processor(spec: TinySpec):
    return clip_image_processor(
        size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size},
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_center_crop=True, do_resize=True,
    )


def save_tiny_clip(out_dir: str | os.PathLike, spec: TinySpec = TinySpec(), seed: int = 0) -> Path:
    """A CLIP vision tower directory like openai/clip-vit-large-patch14-336 (config, weights, processor)."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    model = CLIPVisionModel(clip_config(spec))
    model.config.save_pretrained(str(out))
    state = {("vision_model." + k if not k.startswith("vision_model.") else k): v for k, v in model.state_dict().items()}
    save_state_dict(state, out)
    image_processor(spec).save_pretrained(str(out))
    return out


def tiny_llava(spec: TinySpec = TinySpec(), vocab_size: int = 1000, seed: int = 0,
               vision_tower: str | None = None) -> LlavaLlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlavaLlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.text_hidden, intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads, max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
        mm_vision_tower=vision_tower, mm_vision_config=clip_config(spec).to_dict(),
        mm_hidden_size=spec.vision_hidden, mm_projector_type=spec.projector,
        mm_vision_select_layer=spec.select_layer, mm_vision_select_feature=spec.select_feature,
        image_aspect_ratio="pad", tokenizer_model_max_length=2048,
    )
    model = LlavaLlamaForCausalLM(config)
    with torch.no_grad():  # transformers' init leaves norms at 1 and biases at 0: fine; make CLIP random too
        for p in model.model.vision_tower.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.2)
    return model.eval()


def build_tiny_checkpoint(
    out_dir: str | os.PathLike,
    *,
    spec: TinySpec = TinySpec(),
    seed: int = 0,
    include_vision_tower: bool = False,
    self_describing: bool = False,
    safe_serialization: bool = True,
    max_shard_bytes: int | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """A full checkpoint in the original LLaVA layout at `out_dir`, its CLIP tower beside it.

    Like liuhaotian/llava-v1.5-7b: config.json (model_type "llava", mm_vision_tower pointing at
    `<out_dir>/../<name>-clip`), weights without the tower (unless `include_vision_tower`),
    tokenizer.model + tokenizer_config.json. `self_describing` also stores the tower's config in
    config.json (our extension) and the image processor in the checkpoint.
    """
    from dualfocus.model.checkpoint_writer import save_original_checkpoint
    from dualfocus.model.tokenizer import TOKENIZER_FILES, load_tokenizer
    from dualfocus.tiny.tokenizer import train_llama_tokenizer

    out = Path(out_dir)
    clip_dir = out.parent / f"{out.name}-clip"
    save_tiny_clip(clip_dir, spec, seed)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else train_llama_tokenizer(out / ".tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    model = tiny_llava(spec, vocab_size=len(tokenizer), seed=seed, vision_tower=str(clip_dir.resolve()))
    _copy_tower(model, clip_dir)  # the tower's weights must equal the saved CLIP dir's
    if not self_describing:
        model.config.mm_vision_config = None
    save_original_checkpoint(
        model, out, image_processor=image_processor(spec) if self_describing else None,
        include_vision_tower=include_vision_tower, safe_serialization=safe_serialization,
        max_shard_bytes=max_shard_bytes,
    )
    for f in TOKENIZER_FILES:
        (out / f).write_bytes((tok_dir / f).read_bytes())
    if not tokenizer_dir:
        for f in (out / ".tokenizer").iterdir():
            f.unlink()
        (out / ".tokenizer").rmdir()
    return out


def _copy_tower(model: LlavaLlamaForCausalLM, clip_dir: Path) -> None:
    from dualfocus.model.checkpoint_io import load_state_dict, weight_files

    state = load_state_dict(weight_files(clip_dir))
    target = model.model.vision_tower.vision_tower
    own = target.state_dict()
    mapped = {}
    for k, v in state.items():
        alt = k[len("vision_model."):] if k.startswith("vision_model.") else k
        mapped[k if k in own else alt] = v
    target.load_state_dict(mapped, strict=True)
