"""The Trainer: LLaVA's sampler and projector learning rate, checkpoints in LLaVA's layouts.

Every save (the final one and each `checkpoint-N`) is written in a layout `load_pretrained_model`
reads as it is:
  full fine-tuning     the original LLaVA layout (`save_original_checkpoint`): config.json,
                       weights without the frozen vision tower, tokenizer, preprocessor config
  --lora_enable        adapters + non_lora_trainables.bin + config.json (`dualfocus.train.lora`)
  --tune_mm_mlp_adapter  mm_projector.bin + config.json (load with the LLM as model_base)
"""

from __future__ import annotations

import json
import logging
import os
from types import SimpleNamespace

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from dualfocus.model.checkpoint_writer import original_config_dict, save_original_checkpoint
from dualfocus.model.llava_llama import LlavaLlamaForCausalLM
from dualfocus.train.lora import gathered, save_lora_checkpoint

log = logging.getLogger(__name__)

PROJECTOR = "mm_projector"


# -- LLaVA's length-grouped sampling ------------------------------------------------------------------
def split_to_even_chunks(indices: list[int], lengths: list[int], num_chunks: int) -> list[list[int]]:
    """Deal `indices` into `num_chunks` chunks of (roughly) equal total length."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: list[int], batch_size: int, world_size: int, generator=None) -> list[int]:
    """Shuffle, cut into megabatches (one batch per rank), sort each megabatch longest first."""
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    megabatches = [sorted(indices[i : i + size], key=lambda k: lengths[k], reverse=True)
                   for i in range(0, len(indices), size)]
    return [i for mb in megabatches for chunk in split_to_even_chunks(mb, lengths, world_size) for i in chunk]


def modality_grouped_indices(lengths: list[int], batch_size: int, world_size: int, generator=None) -> list[int]:
    """LLaVA's --group_by_modality_length: each megabatch is all-image or all-text (length < 0)."""
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm = [(i, n) for i, n in enumerate(lengths) if n > 0]
    lang = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    size = world_size * batch_size
    groups = []
    for members in (mm, lang):
        order = length_grouped_indices([n for _, n in members], batch_size, world_size, generator)
        shuffled = [members[k][0] for k in order]
        groups.append([shuffled[i : i + size] for i in range(0, len(shuffled), size)])
    (mm_batches, lang_batches) = groups
    leftover = mm_batches[-1] + lang_batches[-1]
    megabatches = mm_batches[:-1] + lang_batches[:-1]
    megabatches = [megabatches[k] for k in torch.randperm(len(megabatches), generator=generator).tolist()]
    if len(leftover) >= size:
        megabatches = [leftover[:size]] + megabatches
        leftover = leftover[size:]
    if leftover:
        megabatches.append(leftover)
    return [i for mb in megabatches for i in mb]


class ModalityLengthSampler(Sampler):
    def __init__(self, lengths: list[int], batch_size: int, world_size: int, seed: int = 0):
        if any(n == 0 for n in lengths):
            raise ValueError("--group_by_modality_length: a record has no words")
        self.lengths, self.batch_size, self.world_size = lengths, batch_size, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(modality_grouped_indices(self.lengths, self.batch_size, self.world_size, self.generator))


# -- checkpoints ---------------------------------------------------------------------------------------
def base_llava(model):
    """The LlavaLlamaForCausalLM under peft / DeepSpeed wrappers."""
    while not isinstance(model, LlavaLlamaForCausalLM):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            raise TypeError(f"no LlavaLlamaForCausalLM inside {type(model).__name__}")
    return model


class DualFocusTrainer(Trainer):
    """transformers' Trainer plus LLaVA's additions (see the module docstring)."""

    def __init__(self, *args, image_processor=None, lora_enable: bool = False, lora_bias: str = "none",
                 tune_mm_mlp_adapter: bool = False, include_vision_tower: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_processor = image_processor
        self.lora_enable, self.lora_bias = lora_enable, lora_bias
        self.tune_mm_mlp_adapter, self.include_vision_tower = tune_mm_mlp_adapter, include_vision_tower

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(self.args, "group_by_modality_length", False) and hasattr(dataset, "modality_lengths"):
            return ModalityLengthSampler(dataset.modality_lengths, self.args.train_batch_size,
                                         self.args.world_size * self.args.gradient_accumulation_steps,
                                         seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        """With --mm_projector_lr, the projector's parameters get their own learning rate (LLaVA)."""
        if self.args.mm_projector_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = {(d, p): [] for d in (True, False) for p in (True, False)}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups[(name in decay, PROJECTOR in name)].append(param)
        param_groups = []
        for (is_decay, is_projector), params in groups.items():
            if not params:
                continue
            group = {"params": params, "weight_decay": self.args.weight_decay if is_decay else 0.0}
            if is_projector:
                group["lr"] = self.args.mm_projector_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        llava = base_llava(model)
        tokenizer = self.processing_class
        if self.lora_enable:
            save_lora_checkpoint(model, output_dir, state_dict, self.lora_bias, original_config_dict(llava))
            tokenizer.save_pretrained(output_dir)
            if self.image_processor is not None:
                self.image_processor.save_pretrained(output_dir)
        elif self.tune_mm_mlp_adapter:
            if state_dict is None:
                state_dict = {n: gathered(p) for n, p in llava.named_parameters() if PROJECTOR in n}
            weights = {k: v.cpu() for k, v in state_dict.items() if PROJECTOR in k}
            torch.save(weights, os.path.join(output_dir, "mm_projector.bin"))
            with open(os.path.join(output_dir, "config.json"), "w") as f:
                json.dump(original_config_dict(llava), f, indent=2, sort_keys=True)
        else:
            view = llava if state_dict is None else _StateView(llava, state_dict)
            _check_complete(llava, view.state_dict(), self.include_vision_tower, output_dir)
            config_use_cache = llava.config.use_cache
            llava.config.use_cache = True  # the checkpoint is for inference
            try:
                save_original_checkpoint(view, output_dir, tokenizer, self.image_processor,
                                         include_vision_tower=self.include_vision_tower)
            finally:
                llava.config.use_cache = config_use_cache
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))


class _StateView(SimpleNamespace):
    """A model as `save_original_checkpoint` sees it, with weights from a given (gathered) state dict."""

    def __init__(self, model, state: dict):
        super().__init__(config=model.config, model=model.model)
        self._state = state

    def state_dict(self):
        return self._state


def _check_complete(model, state: dict, include_tower: bool, output_dir: str) -> None:
    """A gathered state dict (ZeRO-3 drops frozen weights) must still hold the whole language model."""
    tower = "model.vision_tower."
    missing = [k for k in model.state_dict() if k not in state and not k.startswith(tower)]
    if include_tower:
        missing += [k for k in model.state_dict() if k.startswith(tower) and k not in state]
    if missing:
        raise RuntimeError(f"{output_dir}: the state dict to save lacks {len(missing)} weights, e.g. "
                           f"{', '.join(missing[:5])} (frozen under ZeRO-3? set "
                           "stage3_gather_16bit_weights_on_model_save and train them, or use ZeRO-2)")
