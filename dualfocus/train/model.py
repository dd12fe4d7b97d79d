"""The model to train: a LLaVA checkpoint to continue, or a plain Llama/Vicuna given a vision tower.

Which one is read from `--model_name_or_path`'s config.json (LLaVA's ``mm_*`` fields or a llava-hf
``text_config``), never from its name.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import CLIPVisionModel

from dualfocus.model.builder import load_pretrained_model, vision_config, vision_tower_dir
from dualfocus.model.checkpoint_io import CONFIG_META_KEYS, load_state_dict, weight_files
from dualfocus.model.hub import resolve_path
from dualfocus.model.image_processor import load_clip_processor
from dualfocus.model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM
from dualfocus.model.tokenizer import load_tokenizer

log = logging.getLogger(__name__)



def is_llava_checkpoint(path: Path) -> bool:
    cfg = _read_config(path)
    return bool(cfg.get("mm_vision_tower") or cfg.get("mm_vision_config") or "text_config" in cfg
                or (path / "adapter_config.json").is_file())


def attention_implementation(requested: str | None, device: torch.device) -> str:
    """flash_attention_2 on CUDA when flash-attn is installed, sdpa otherwise (or what was asked)."""
    if requested:
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ImportError("--attn_implementation flash_attention_2 needs flash-attn (pip install 'dualfocus[flash]')")
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(model_args, training_args, compute_dtype: torch.dtype):
    """(model, tokenizer, image_processor) for training, weights in fp32 unless quantized (as LLaVA)."""
    path = resolve_path(model_args.model_name_or_path)
    attn = attention_implementation(model_args.attn_implementation, training_args.device)
    if is_llava_checkpoint(path):
        model, tokenizer, image_processor = _continue_llava(path, model_args, training_args, compute_dtype, attn)
    else:
        if training_args.bits in (4, 8):
            raise NotImplementedError("--bits 4/8 is supported when continuing a LLaVA checkpoint; "
                                      "a plain LLM + --vision_tower trains in 16/32 bits")
        model, tokenizer, image_processor = _new_llava(path, model_args, attn)
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    return model, tokenizer, image_processor


def _continue_llava(path: Path, model_args, training_args, compute_dtype, attn):
    cfg = _read_config(path)
    if model_args.vision_tower and model_args.vision_tower != cfg.get("mm_vision_tower"):
        raise ValueError(
            f"--vision_tower {model_args.vision_tower!r} differs from the checkpoint's mm_vision_tower "
            f"{cfg.get('mm_vision_tower')!r}; a LLaVA checkpoint keeps its tower (drop --vision_tower)")
    quantized = training_args.bits in (4, 8)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        str(path), None, device_map=None,
        device=str(training_args.device) if quantized else "cpu",
        torch_dtype=compute_dtype if quantized else torch.float32,
        attn_implementation=attn, load_4bit=training_args.bits == 4, load_8bit=training_args.bits == 8,
    )
    return model, tokenizer, image_processor


def _new_llava(path: Path, model_args, attn: str):
    """LLaVA's first stage setup: Llama weights + CLIP tower + a new (or pretrained) projector."""
    if not model_args.vision_tower:
        raise ValueError(f"{path} is a plain language model (no mm_vision_tower in config.json): "
                         "pass --vision_tower (and --pretrain_mm_mlp_adapter from pretraining)")
    cfg = _read_config(path)
    if cfg.get("model_type") not in (None, "llama"):
        raise ValueError(f"{path}: model_type {cfg.get('model_type')!r}; only Llama-family LLMs are supported")
    tower_dir = vision_tower_dir(model_args.vision_tower, path)
    vision = vision_config(model_args.vision_tower, path)  # names a missing config.json
    fields = {k: v for k, v in cfg.items() if k not in CONFIG_META_KEYS}
    config = LlavaLlamaConfig(
        **fields, mm_vision_tower=model_args.vision_tower, mm_vision_config=vision.to_dict(),
        mm_hidden_size=vision.hidden_size, mm_projector_type=model_args.mm_projector_type,
        mm_vision_select_layer=model_args.mm_vision_select_layer,
        mm_vision_select_feature=model_args.mm_vision_select_feature,
    )
    config._attn_implementation = attn
    with init_empty_weights(include_buffers=False):
        model = LlavaLlamaForCausalLM(config)
    state = load_state_dict(weight_files(path))
    expected = {k for k in model.state_dict() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"{path}: weights missing for {', '.join(missing[:8])} ({len(missing)} in all)")
    model.load_state_dict({k: v.float() for k, v in state.items() if k in expected}, strict=False, assign=True)
    clip = CLIPVisionModel.from_pretrained(str(tower_dir), torch_dtype=torch.float32)
    model.model.vision_tower.vision_tower.load_state_dict(clip.state_dict(), strict=True, assign=True)
    model.model.vision_tower.vision_tower.config._attn_implementation = "eager" if attn == "eager" else "sdpa"
    projector = model.model.mm_projector
    projector.to_empty(device="cpu")
    for m in projector.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    model.model.vision_tower.requires_grad_(False)
    tokenizer = load_tokenizer(path)
    image_processor = load_clip_processor(tower_dir)
    return model, tokenizer, image_processor


def load_projector(model: LlavaLlamaForCausalLM, path: str) -> None:
    """LLaVA's --pretrain_mm_mlp_adapter: `mm_projector.bin` (keys ending in mm_projector.<param>)."""
    state = load_state_dict([Path(path)])
    weights = {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}
    if not weights:
        raise ValueError(f"{path}: no mm_projector.* weights")
    projector = model.model.mm_projector
    dtype = next(projector.parameters()).dtype
    missing, unexpected = projector.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: projector weights do not fit mm_projector_type {model.config.mm_projector_type!r} "
                         f"(missing {missing}, unexpected {unexpected})")


def _read_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    return json.loads(f.read_text())
