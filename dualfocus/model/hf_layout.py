"""The llava-hf layout (transformers' `LlavaForConditionalGeneration`) <-> our model, in memory.

The loader reads llava-hf checkpoints through `load_hf_checkpoint`; `dualfocus.model.convert` (the
CLI) writes either layout. Weights map one to one; llava-hf adds one embedding row for its `<image>` token (ids >= that
row are dropped on the way back, as the original vocabulary ends there). Only the mlp2x_gelu
projector exists in llava-hf.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from dualfocus.model.image_processor import load_clip_processor
from dualfocus.model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM
from dualfocus.model.tokenizer import load_tokenizer

# Fields of LlavaLlamaConfig that are LLaVA's, not Llama's.
_LLAVA_FIELDS = (
    "mm_vision_tower", "mm_vision_config", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer",
    "mm_vision_select_feature", "image_aspect_ratio", "mm_use_im_start_end", "mm_use_im_patch_token",
    "tokenizer_model_max_length", "tokenizer_padding_side", "use_mm_proj", "freeze_mm_mlp_adapter",
    "tune_mm_mlp_adapter", "mm_projector_lr", "mm_patch_merge_type", "image_grid_pinpoints",
)
# Those that llava-hf's config expresses in its own terms; the others are carried as they are.
_CARRIED_FIELDS = tuple(f for f in _LLAVA_FIELDS if f not in (
    "mm_vision_config", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature"))
_DROP = ("model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "auto_map")
_FEATURE = {"patch": "default", "cls_patch": "full"}


# (original prefix, llava-hf prefix), the most specific first; the projector's indices map apart.
_RENAMES = (("model.vision_tower.vision_tower.", "model.vision_tower."), ("model.", "model.language_model."))
_HF_PROJECTOR = "model.multi_modal_projector.linear_"


def _key_to_hf(key: str) -> str:
    if key.startswith("model.mm_projector."):  # Sequential(Linear, GELU, Linear): indices 0, 2 -> linear_1, _2
        idx, rest = key[len("model.mm_projector."):].split(".", 1)
        return f"{_HF_PROJECTOR}{int(idx) // 2 + 1}.{rest}"
    return _rename(key, _RENAMES)


def _key_to_original(key: str) -> str:
    if key.startswith(_HF_PROJECTOR):
        n, rest = key[len(_HF_PROJECTOR):].split(".", 1)
        return f"model.mm_projector.{(int(n) - 1) * 2}.{rest}"
    return _rename(key, [(hf, original) for original, hf in _RENAMES])


def _rename(key: str, pairs) -> str:
    """`key` with the first matching prefix of (old, new) `pairs` replaced; as it is when none matches."""
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def original_to_hf(model: LlavaLlamaForCausalLM) -> LlavaForConditionalGeneration:
    cfg = model.config
    if cfg.mm_projector_type != "mlp2x_gelu":
        raise ValueError(f"llava-hf supports only the mlp2x_gelu projector, not {cfg.mm_projector_type!r}")
    text = {k: v for k, v in cfg.to_dict().items() if k not in _LLAVA_FIELDS + _DROP}
    vocab = cfg.vocab_size
    text["vocab_size"] = vocab + 1  # + the <image> token row
    hf_cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**cfg.mm_vision_config),
        text_config=LlamaConfig(**text),
        image_token_index=vocab,
        vision_feature_layer=cfg.mm_vision_select_layer,
        vision_feature_select_strategy=_FEATURE[cfg.mm_vision_select_feature],
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    # LLaVA's fields llava-hf has no place for ride along as extra attributes: the way back is lossless.
    cfg_dict = cfg.to_dict()
    for field in _CARRIED_FIELDS:
        if field in cfg_dict:
            setattr(hf_cfg, field, cfg_dict[field])
    with init_empty_weights(include_buffers=False):
        hf = LlavaForConditionalGeneration(hf_cfg)
    state = {}
    for key, tensor in model.state_dict().items():
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = torch.cat([tensor, tensor.new_zeros(1, tensor.shape[1])])
        state[_key_to_hf(key)] = tensor
    _assign(hf, state)
    return hf


def hf_to_original(hf: LlavaForConditionalGeneration) -> LlavaLlamaForCausalLM:
    hf_cfg = hf.config
    if hf_cfg.vision_feature_select_strategy not in ("default", "full") or not isinstance(
        hf_cfg.vision_feature_layer, int
    ):
        raise ValueError("only a single vision_feature_layer with 'default'/'full' selection maps to LLaVA")
    vocab = hf_cfg.image_token_index if hf_cfg.image_token_index < hf_cfg.text_config.vocab_size else None
    text = {k: v for k, v in hf_cfg.text_config.to_dict().items() if k not in _DROP}
    if vocab is not None:
        text["vocab_size"] = vocab
    carried = {f: getattr(hf_cfg, f) for f in _CARRIED_FIELDS if hasattr(hf_cfg, f)}
    cfg = LlavaLlamaConfig(
        **text,
        **carried,
        mm_vision_config=hf_cfg.vision_config.to_dict(),
        mm_hidden_size=hf_cfg.vision_config.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=hf_cfg.vision_feature_layer,
        mm_vision_select_feature={v: k for k, v in _FEATURE.items()}[hf_cfg.vision_feature_select_strategy],
    )
    with init_empty_weights(include_buffers=False):
        model = LlavaLlamaForCausalLM(cfg)
    state = {}
    for key, tensor in hf.state_dict().items():
        if vocab is not None and key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            tensor = tensor[:vocab]
        state[_key_to_original(key)] = tensor
    _assign(model, state)
    return model


def _assign(model: torch.nn.Module, state: dict) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"conversion key mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"conversion: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=True, assign=True)


def load_hf_checkpoint(path: Path, dtype: torch.dtype):
    """A llava-hf directory -> (our model, tokenizer, image processor). Never runs the checkpoint's code."""
    hf = LlavaForConditionalGeneration.from_pretrained(str(path), dtype=dtype)
    model = hf_to_original(hf)
    # The one LLaVA tokenizer loader: ids as transformers 4.31 made them under the checkpoint's own
    # `legacy` flag (llava-hf ships `false`), added tokens at their saved ids; never remote code.
    tokenizer = load_tokenizer(path)
    return model, tokenizer, load_clip_processor(path)
