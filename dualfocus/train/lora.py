"""LoRA / QLoRA on the language model (peft), and LLaVA's LoRA checkpoint layout.

A LoRA checkpoint is what LLaVA writes and `load_pretrained_model(lora_dir, model_base=base)` merges:
  adapter_config.json + adapter_model.safetensors   the adapters (peft)
  non_lora_trainables.bin                           trained weights outside the adapters (the
                                                    projector), keys prefixed `base_model.model.`
  config.json                                       the LLaVA config, original layout
The vision tower and the projector never get adapters; `lm_head` neither (LLaVA: "needed for 16-bit").
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

log = logging.getLogger(__name__)

MULTIMODAL_MODULES = ("mm_projector", "vision_tower", "vision_resampler")


def find_all_linear_names(model) -> list[str]:
    """Names (last component) of the language model's Linear layers: LoRA's target_modules."""
    names = set()
    for name, module in model.named_modules():
        if any(k in name for k in MULTIMODAL_MODULES):
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.split(".")[-1])
    names.discard("lm_head")
    return sorted(names)


def require_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("--bits 4/8 (QLoRA) needs bitsandbytes and a CUDA GPU: pip install bitsandbytes")
    if not torch.cuda.is_available():
        raise RuntimeError("--bits 4/8 (QLoRA) needs a CUDA GPU")


def require_peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("--lora_enable needs peft: pip install 'dualfocus[train]'") from e
    return peft


def add_lora(model, training_args, compute_dtype: torch.dtype):
    """Wrap `model` in a peft LoRA model over every language-model Linear layer (as LLaVA)."""
    peft = require_peft()
    config = peft.LoraConfig(
        r=training_args.lora_r, lora_alpha=training_args.lora_alpha, lora_dropout=training_args.lora_dropout,
        target_modules=find_all_linear_names(model), bias=training_args.lora_bias, task_type="CAUSAL_LM",
    )
    if training_args.bits == 16 and compute_dtype != torch.float32:
        model.to(compute_dtype)  # LLaVA: a 16-bit LoRA run holds the base weights in bf16/fp16
    log.info("adding LoRA adapters (r=%d, alpha=%d) to %s", config.r, config.lora_alpha, config.target_modules)
    return peft.get_peft_model(model, config)


def prepare_kbit(model, gradient_checkpointing: bool):
    peft = require_peft()
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


# -- state --------------------------------------------------------------------------------------------
def gathered(param: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a parameter, gathered first when ZeRO-3 partitioned it (LLaVA's maybe_zero_3)."""
    if hasattr(param, "ds_id"):
        from deepspeed import zero

        with zero.GatheredParameters([param]):
            return param.data.detach().cpu().clone()
    return param.detach().cpu().clone()


def lora_state(named: dict[str, torch.Tensor], bias: str = "none") -> dict[str, torch.Tensor]:
    """Adapter weights (and biases per `bias`, as peft's get_peft_model_state_dict)."""
    if bias == "none":
        keep = {k for k in named if "lora_" in k}
    elif bias == "all":
        keep = {k for k in named if "lora_" in k or "bias" in k}
    else:  # lora_only: the biases of layers that have adapters
        adapted = {k.split("lora_")[0] for k in named if "lora_" in k}
        keep = {k for k in named if "lora_" in k or (k.endswith("bias") and k[: -len("bias")] in adapted)}
    return {k: named[k] for k in sorted(keep)}


def non_lora_state(named: dict[str, torch.Tensor], trainable: set[str]) -> dict[str, torch.Tensor]:
    """Trained weights outside the adapters (the projector, a tuned tower): non_lora_trainables.bin."""
    return {k: v for k, v in named.items() if "lora_" not in k and k in trainable}


def save_lora_checkpoint(model, output_dir: str, state_dict: dict | None, bias: str, config_dict: dict) -> None:
    """Write LLaVA's LoRA layout. `state_dict`: the trainer's (ZeRO-3 gathers it), else read from `model`."""
    import json

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if state_dict is None:
        state_dict = {n: gathered(p) for n, p in model.named_parameters() if n in trainable or "lora_" in n}
    os.makedirs(output_dir, exist_ok=True)
    adapters = lora_state(state_dict, bias)
    if not adapters:
        raise RuntimeError(f"{output_dir}: the model has no LoRA weights to save")
    model.save_pretrained(output_dir, state_dict={k: v.cpu() for k, v in adapters.items()})
    torch.save({k: v.cpu() for k, v in non_lora_state(state_dict, trainable).items()},
               os.path.join(output_dir, "non_lora_trainables.bin"))
    with open(os.path.join(output_dir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
