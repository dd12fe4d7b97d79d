"""How a loaded model runs: device, dtype, attention implementation, 4/8-bit quantization, placement
on one or several GPUs. The loader's options, resolved once and checked loudly.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from accelerate import init_empty_weights

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA is not available: loading on CPU")
        return torch.device("cpu")
    return device


def resolve_dtype(torch_dtype, device: torch.device) -> torch.dtype:
    if torch_dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(torch_dtype, str):
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
        if torch_dtype not in names:
            raise ValueError(f"unknown dtype {torch_dtype!r}: expected one of {sorted(names)}")
        return names[torch_dtype]
    return torch_dtype


def resolve_attention(attn_implementation: str | None, use_flash_attn: bool) -> str:
    attn = attn_implementation or ("flash_attention_2" if use_flash_attn else "sdpa")
    if attn not in ("sdpa", "eager", "flash_attention_2"):
        raise ValueError(f"unknown attention implementation {attn!r}: expected sdpa, eager or flash_attention_2")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError("flash_attention_2 needs the flash-attn package (pip install 'dualfocus[flash]', GPU only)")
    return attn


def require_bitsandbytes(device: torch.device) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("4/8-bit loading needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU")
    if device.type != "cuda":
        raise ValueError("4/8-bit loading needs a CUDA GPU")


def quantize(model, load_4bit: bool, dtype: torch.dtype):
    """Replace the language model's Linear layers by bitsandbytes ones (vision tower and projector stay)."""
    from transformers import BitsAndBytesConfig
    from transformers.integrations import replace_with_bnb_linear

    qcfg = BitsAndBytesConfig(load_in_4bit=load_4bit, load_in_8bit=not load_4bit,
                              bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True,
                              bnb_4bit_quant_type="nf4",
                              llm_int8_skip_modules=["mm_projector", "vision_tower", "lm_head"])
    state = model.state_dict()
    with init_empty_weights():
        model = replace_with_bnb_linear(model, quantization_config=qcfg)
    model.load_state_dict(state, strict=False, assign=True)
    return model


def place(model, device: torch.device, device_map):
    if device.type == "cuda" and device_map == "auto" and torch.cuda.device_count() > 1:
        from accelerate import dispatch_model, infer_auto_device_map

        dmap = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules)
        return dispatch_model(model, device_map=dmap)
    if isinstance(device_map, dict):
        from accelerate import dispatch_model

        return dispatch_model(model, device_map=device_map)
    return model.to(device)
