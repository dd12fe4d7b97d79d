"""load_pretrained_model: LLaVA's loader, deciding by the files and config present.

Layouts (checked in this order):
  lora       `adapter_config.json` (+ adapter weights, `non_lora_trainables.bin`) on `model_base`
  projector  `mm_projector.bin` and no full weights, on `model_base` (a plain Llama/Vicuna)
  hf         a transformers llava-hf checkpoint (`LlavaForConditionalGeneration`)
  original   LLaVA's own layout: flat Llama config + `mm_*` fields, `model.layers.*` weights
Names of the model or the path are never consulted.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import CLIPVisionConfig

from dualfocus.model import runtime
from dualfocus.model import tokenizer as tokenizer_io
from dualfocus.model.checkpoint_io import (
    CONFIG_META_KEYS,
    TOWER_PREFIX,
    CheckpointError,
    confined,
    load_state_dict,
    weight_files,
)
from dualfocus.model.hf_layout import load_hf_checkpoint
from dualfocus.model.hub import is_hub_id, resolve_path
from dualfocus.model.image_processor import PREPROCESSOR_CONFIG, load_clip_processor
from dualfocus.model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM

log = logging.getLogger(__name__)

# Keys some LLaVA checkpoints carry that no current module owns (recomputed at init).
_IGNORED_KEYS = re.compile(r"rotary_emb\.inv_freq$|position_ids$")
# model_type values of LLaVA checkpoints (the release, LLaVA's code, llava-hf; old ones say llama).
KNOWN_MODEL_TYPES = ("llava", "llava_llama", "llama")


# -- public API ---------------------------------------------------------------------------------
def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | None = "auto",
    device: str = "cuda",
    *,
    torch_dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    use_flash_attn: bool = False,
    **kwargs,
):
    """Load a LLaVA-1.5 / DualFocus checkpoint; returns (tokenizer, model, image_processor, context_len).

    `model_name` is accepted for LLaVA compatibility and ignored: the layout is read from the files.
    A checkpoint's own Python code (`auto_map`) is never run: trust_remote_code=True is refused, as is
    any other option this loader does not use.
    dtype: fp16 on GPU, fp32 on CPU unless `torch_dtype` says otherwise. Attention: sdpa, or
    flash_attention_2 (`use_flash_attn=True`, needs flash-attn), or eager.
    """
    del model_name  # accepted for LLaVA's signature; the layout decides
    _refuse_remote_code(kwargs)
    device = runtime.resolve_device(device)
    dtype = runtime.resolve_dtype(torch_dtype, device)
    attn = runtime.resolve_attention(attn_implementation, use_flash_attn)
    if load_4bit or load_8bit:
        runtime.require_bitsandbytes(device)
    path = resolve_path(model_path)
    layout = detect_layout(path, model_base)
    log.info("loading %s as a %s checkpoint", path, layout)
    if layout == "hf":
        model, tokenizer, image_processor = load_hf_checkpoint(path, dtype=dtype)
    else:
        base = resolve_path(model_base) if model_base else None
        model = _load_layout(layout, path, base, dtype)
        tokenizer = load_tokenizer(path if _has_tokenizer(path) else base)
        image_processor = load_image_processor(path, model.config)
    model.config._attn_implementation = attn
    model.model.vision_tower.vision_tower.config._attn_implementation = "eager" if attn == "eager" else "sdpa"
    _add_image_tokens(model, tokenizer)
    if load_4bit or load_8bit:
        model = runtime.quantize(model, load_4bit, dtype)
    model = runtime.place(model, device, device_map)
    model.eval()
    context_len = getattr(model.config, "max_sequence_length", None) or 2048
    return tokenizer, model, image_processor, context_len


def detect_layout(path: Path, model_base: str | None) -> str:
    if (path / "adapter_config.json").is_file():
        if not model_base:
            raise CheckpointError(f"{path}: a LoRA checkpoint (adapter_config.json); pass the base model as model_base")
        return "lora"
    has_weights = bool(weight_files(path))
    if (path / "mm_projector.bin").is_file() and not has_weights:
        if not model_base:
            raise CheckpointError(f"{path}: a projector-only checkpoint (mm_projector.bin); pass the LLM as model_base")
        return "projector"
    cfg = read_config(path)
    if "text_config" in cfg or "LlavaForConditionalGeneration" in (cfg.get("architectures") or []):
        return "hf"
    if not (cfg.get("mm_vision_tower") or cfg.get("mm_vision_config")):
        raise CheckpointError(
            f"{path / 'config.json'}: no mm_vision_tower; not a LLaVA checkpoint (a plain LLM goes in model_base)"
        )
    if not has_weights:
        raise CheckpointError(f"{path}: no weights (model.safetensors, pytorch_model.bin or a sharded index)")
    if model_base:
        raise CheckpointError(
            f"{path} is a full checkpoint; model_base={model_base!r} would be ignored. Drop model_base."
        )
    return "original"


def read_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{path}: missing config.json")
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from e
    if cfg.get("auto_map") and cfg.get("model_type") not in KNOWN_MODEL_TYPES:
        raise CheckpointError(f"{f}: model_type {cfg.get('model_type')!r} with auto_map is a model that needs its "
                              "own Python code, which dualfocus never runs; use a LLaVA-1.5 checkpoint "
                              "(model_type 'llava')")
    return cfg


def llava_config(cfg: dict, checkpoint_dir: Path) -> LlavaLlamaConfig:
    """Our config from an original-layout config.json, with the vision tower's config resolved."""
    fields = {k: v for k, v in cfg.items() if k not in CONFIG_META_KEYS}
    if not fields.get("mm_vision_config"):
        fields["mm_vision_config"] = vision_config(fields.get("mm_vision_tower"), checkpoint_dir).to_dict()
    return LlavaLlamaConfig(**fields)


def vision_config(tower: str | None, checkpoint_dir: Path) -> CLIPVisionConfig:
    """The tower's own config.json; without it transformers would silently use CLIP-L's defaults."""
    tower_dir = vision_tower_dir(tower, checkpoint_dir)
    if not (tower_dir / "config.json").is_file():
        raise CheckpointError(f"vision tower {tower_dir} (mm_vision_tower in {checkpoint_dir / 'config.json'}): "
                              "missing config.json; copy the CLIP tower's config.json into that folder")
    return CLIPVisionConfig.from_pretrained(str(tower_dir))  # a concrete class: never a checkpoint's code


def vision_tower_dir(tower: str | None, checkpoint_dir: Path) -> Path:
    if not tower:
        raise CheckpointError(f"{checkpoint_dir / 'config.json'}: mm_vision_tower is not set")
    for candidate in (Path(os.path.expanduser(tower)), checkpoint_dir / tower):
        if candidate.is_dir():
            return candidate
    if is_hub_id(tower):
        return resolve_path(tower)
    raise FileNotFoundError(
        f"vision tower {tower!r} (mm_vision_tower in {checkpoint_dir / 'config.json'}) does not exist"
    )


def load_tokenizer(path: Path | None):
    """The checkpoint's sentencepiece tokenizer, as transformers 4.31 tokenized (never remote code)."""
    if path is None:
        raise CheckpointError("no tokenizer.model in the checkpoint and no model_base to take it from")
    return tokenizer_io.load_tokenizer(path)


def load_image_processor(path: Path, config: LlavaLlamaConfig):
    """The checkpoint's own preprocessor_config.json if present, else the vision tower's (as LLaVA)."""
    if (path / PREPROCESSOR_CONFIG).is_file():
        return load_clip_processor(path)
    return load_clip_processor(vision_tower_dir(config.mm_vision_tower, path))


# -- layouts --------------------------------------------------------------------------------------
def _load_layout(layout: str, path: Path, base: Path | None, dtype: torch.dtype) -> LlavaLlamaForCausalLM:
    config = llava_config(read_config(path), path)
    if layout == "original":
        return _materialize(config, load_state_dict(weight_files(path)), path, dtype)
    assert base is not None
    base_files = weight_files(base)
    if not base_files:
        raise CheckpointError(f"model_base {base}: no weights found")
    state = load_state_dict(base_files)
    if layout == "projector":
        state.update(_projector_weights(confined(path, "mm_projector.bin")))
        return _materialize(config, state, path, dtype)
    # lora: base weights + non-LoRA trainables (projector, maybe embeddings), then the adapter merged.
    extra = path / "non_lora_trainables.bin"
    if extra.is_file():
        extra = confined(path, extra.name)
        state.update(_strip_peft_prefix(load_state_dict([extra])))
    model = _materialize(config, state, path, dtype, allow_missing_projector=not extra.is_file())
    return _merge_lora(model, path)


def _materialize(
    config: LlavaLlamaConfig, state: dict, path: Path, dtype: torch.dtype, allow_missing_projector: bool = False
) -> LlavaLlamaForCausalLM:
    with init_empty_weights(include_buffers=False):
        model = LlavaLlamaForCausalLM(config)
    expected = model.state_dict()
    state = _normalise_tower_keys(state, expected)
    # A stray buffer (e.g. CLIP's position_ids in old checkpoints) does not make the tower present.
    if not any(k.startswith(TOWER_PREFIX) and not _IGNORED_KEYS.search(k) for k in state):
        state.update(_tower_weights(config.mm_vision_tower, path, expected))
    _check_keys(state, expected, path, allow_missing_projector)
    floating = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items() if k in expected}
    model.load_state_dict(floating, strict=False, assign=True)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:  # only possible for an allowed-missing projector: initialise it
        model.model.mm_projector.to_empty(device="cpu").to(dtype)
        for m in model.model.mm_projector.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    model.model.vision_tower.requires_grad_(False)
    return model


def _check_keys(state: dict, expected: dict, path: Path, allow_missing_projector: bool) -> None:
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: weight {key} has shape {tuple(tensor.shape)}, the config needs {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in state]
    if allow_missing_projector:
        missing = [k for k in missing if not k.startswith("model.mm_projector.")]
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise CheckpointError(f"{path}: weights missing for {shown}")
    unexpected = [k for k in state if k not in expected and not _IGNORED_KEYS.search(k)]
    if unexpected:
        log.warning("%s: %d unused weights, e.g. %s", path, len(unexpected), ", ".join(unexpected[:5]))


def _normalise_tower_keys(state: dict, expected: dict) -> dict:
    """CLIP keys on disk have `vision_model.`; recent transformers modules may not (or vice versa)."""
    out = {}
    for key, tensor in state.items():
        if key.startswith(TOWER_PREFIX) and key not in expected:
            rest = key[len(TOWER_PREFIX):]
            alt = rest[len("vision_model."):] if rest.startswith("vision_model.") else "vision_model." + rest
            if TOWER_PREFIX + alt in expected:
                key = TOWER_PREFIX + alt
        out[key] = tensor
    return out


def _tower_weights(tower: str | None, checkpoint_dir: Path, expected: dict) -> dict:
    tower_dir = vision_tower_dir(tower, checkpoint_dir)
    files = weight_files(tower_dir)
    if not files:
        raise CheckpointError(f"vision tower {tower_dir}: no weights found")
    state = {}
    for key, tensor in load_state_dict(files).items():
        if key.startswith("vision_model.") or not key.startswith(("text_model.", "text_projection", "visual_projection", "logit_scale")):
            state[TOWER_PREFIX + key] = tensor
    return _normalise_tower_keys(state, expected)


def _projector_weights(f: Path) -> dict:
    state = load_state_dict([f])
    out = {}
    for key, tensor in state.items():
        idx = key.find("mm_projector.")
        if idx < 0:
            continue
        out["model." + key[idx:]] = tensor
    if not out:
        raise CheckpointError(f"{f}: no mm_projector.* weights")
    return out


def _strip_peft_prefix(state: dict) -> dict:
    out = {}
    for key, tensor in state.items():
        for prefix in ("base_model.model.", "base_model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = tensor
    return out


def _merge_lora(model: LlavaLlamaForCausalLM, path: Path) -> LlavaLlamaForCausalLM:
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ImportError(f"{path} is a LoRA checkpoint: install peft (pip install 'dualfocus[train]')") from e
    peft_model = PeftModel.from_pretrained(model, str(path))
    return peft_model.merge_and_unload()


# -- options --------------------------------------------------------------------------------------
def _refuse_remote_code(kwargs: dict) -> None:
    """LLaVA's signature ends in ``**kwargs``; none is used here, so none may pass unnoticed:
    trust_remote_code=True (there is no remote code to trust) and any unknown option fail."""
    if kwargs.get("trust_remote_code"):
        raise ValueError("trust_remote_code=True: dualfocus builds its own LLaVA model and never runs a "
                         "checkpoint's code; drop the option")
    unknown = sorted(k for k in kwargs if k != "trust_remote_code")
    if unknown:
        raise TypeError(f"load_pretrained_model got unknown option(s) {', '.join(unknown)}")


def _add_image_tokens(model, tokenizer) -> None:
    """LLaVA adds <im_patch> / <im_start>, <im_end> to the tokenizer when the config asks for them."""
    from dualfocus.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN

    added = 0
    if getattr(model.config, "mm_use_im_patch_token", False):
        added += tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
    if getattr(model.config, "mm_use_im_start_end", False):
        added += tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    # Only rows for tokens added here: a llava-hf tokenizer's own `<image>` token (id == the
    # original vocab size) has no row in the original layout, and -200 stands for it anyway.
    if added and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.model").is_file()
