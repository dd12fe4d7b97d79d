"""Writing a model in the original LLaVA layout (config.json model_type "llava", `model.layers.*`
weights, the CLIP tower under `model.vision_tower.vision_tower.vision_model.*`): what training,
conversion and the tiny fixtures save, and what `dualfocus.model.builder` loads back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dualfocus.model.checkpoint_io import CONFIG_META_KEYS, TOWER_PREFIX, save_state_dict
from dualfocus.model.llava_llama import LlavaLlamaForCausalLM


def save_original_checkpoint(
    model: LlavaLlamaForCausalLM,
    out_dir: str | os.PathLike,
    tokenizer=None,
    image_processor=None,
    *,
    include_vision_tower: bool = True,
    safe_serialization: bool = True,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write `model` in the original LLaVA layout (config.json model_type "llava")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(original_config_dict(model), indent=2, sort_keys=True))
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(TOWER_PREFIX):
            if not include_vision_tower:
                continue
            key = TOWER_PREFIX + _with_vision_model(key[len(TOWER_PREFIX):])
        state[key] = tensor
    save_state_dict(state, out, safe_serialization=safe_serialization, max_shard_bytes=max_shard_bytes)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))
    return out


def original_config_dict(model: LlavaLlamaForCausalLM) -> dict:
    """config.json of the original LLaVA layout: flat Llama fields + mm_*, model_type "llava"."""
    cfg = model.config.to_dict()
    for k in CONFIG_META_KEYS:
        cfg.pop(k, None)
    cfg.update(model_type="llava", architectures=["LlavaLlamaForCausalLM"], use_mm_proj=True,
               mm_hidden_size=model.model.vision_tower.hidden_size, use_cache=True)
    return cfg


def _with_vision_model(rest: str) -> str:
    return rest if rest.startswith("vision_model.") else "vision_model." + rest
