"""DualFocus supervised fine-tuning: `python -m dualfocus.train.train` with LLaVA's arguments.

    deepspeed dualfocus/train/train.py --deepspeed scripts/train/zero3.json \\
        --model_name_or_path liuhaotian/llava-v1.5-7b --version v1 \\
        --data_path dualfocus_train.json --image_folder images/ --bf16 True --output_dir out ...

See docs/training.md for the data format, the flags DualFocus adds and the checkpoint layouts.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys

import torch

from dualfocus.constants import DEFAULT_IMAGE_PATCH_TOKEN
from dualfocus.conversation import conv_templates
from dualfocus.train.arguments import parse_args
from dualfocus.train.data import make_supervised_data_module
from dualfocus.train.lora import add_lora, prepare_kbit, require_bitsandbytes
from dualfocus.train.model import load_model
from dualfocus.train.trainer import DualFocusTrainer

log = logging.getLogger(__name__)


def compute_dtype_of(training_args) -> torch.dtype:
    return torch.float16 if training_args.fp16 else torch.bfloat16 if training_args.bf16 else torch.float32


def conversation_template(version: str):
    if version not in conv_templates:
        raise ValueError(f"--version {version!r} is not a conversation template; choose one of {sorted(conv_templates)}")
    return conv_templates[version]


def prepare_tokenizer(tokenizer, model, model_args, training_args) -> None:
    """LLaVA's tokenizer setup: max length, right padding, pad = unk; optional <im_patch> token."""
    tokenizer.model_max_length = training_args.model_max_length
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    if model_args.mm_use_im_patch_token:
        if tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True):
            model.resize_token_embeddings(len(tokenizer))
    model.config.mm_use_im_patch_token = model_args.mm_use_im_patch_token
    model.config.mm_use_im_start_end = False
    model.config.tokenizer_model_max_length = training_args.model_max_length
    model.config.tokenizer_padding_side = "right"


def set_trainable(model, model_args, training_args) -> None:
    """LLaVA's freezing rules; the vision tower trains only with --tune_vit."""
    lm = model.model
    model.requires_grad_(True)
    if model_args.freeze_backbone:
        lm.requires_grad_(False)
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        lm.mm_projector.requires_grad_(True)
    if training_args.freeze_mm_mlp_adapter:
        lm.mm_projector.requires_grad_(False)
    lm.vision_tower.requires_grad_(model_args.tune_vit)


def build(model_args, data_args, training_args):
    """Model (maybe LoRA-wrapped), tokenizer, image processor and data, ready for the Trainer."""
    if training_args.bits in (4, 8):
        require_bitsandbytes()
    conv = conversation_template(model_args.version)
    compute_dtype = compute_dtype_of(training_args)
    model, tokenizer, image_processor = load_model(model_args, training_args, compute_dtype)
    model.config.use_cache = False
    model.config.image_aspect_ratio = data_args.image_aspect_ratio
    model.config.mm_projector_lr = training_args.mm_projector_lr
    model.config.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    prepare_tokenizer(tokenizer, model, model_args, training_args)
    set_trainable(model, model_args, training_args)
    if training_args.bits in (4, 8):
        model = prepare_kbit(model, training_args.gradient_checkpointing)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings (LoRA) must still pass gradients on
    if training_args.lora_enable:
        model = add_lora(model, training_args, compute_dtype)
        llava = model.get_base_model()
        # peft froze everything but the adapters: the projector trains too (LLaVA), unless frozen.
        if not training_args.freeze_mm_mlp_adapter:
            llava.model.mm_projector.requires_grad_(True)
        if model_args.tune_vit:
            llava.model.vision_tower.requires_grad_(True)
        if training_args.bits in (4, 8):
            llava.model.mm_projector.to(dtype=compute_dtype)
    data_module = make_supervised_data_module(tokenizer, image_processor, conv, data_args,
                                              training_args.model_max_length)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("trainable parameters: %d of %d", n_train, sum(p.numel() for p in model.parameters()))
    return model, tokenizer, image_processor, data_module


def init_cpu_deepspeed(argv: list[str]) -> None:
    """DeepSpeed without CUDA: its CPU accelerator, the process group on --ddp_backend (default gloo).

    Must run before the arguments are parsed: building `TrainingArguments` already sets up the
    distributed state, and for DeepSpeed the Trainer passes no backend, so DeepSpeed's CPU
    accelerator would pick oneCCL ("ccl") whenever oneccl_bindings_for_pytorch is installed.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--deepspeed")
    pre.add_argument("--ddp_backend")
    known, _ = pre.parse_known_args(argv)
    if not known.deepspeed or torch.cuda.is_available():
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=known.ddp_backend or "gloo", auto_mpi_discovery=False)


def train(argv: list[str] | None = None):
    """Parse the arguments, train, save; returns the Trainer."""
    argv = sys.argv[1:] if argv is None else argv
    init_cpu_deepspeed(argv)
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if training_args.local_rank in (-1, 0) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, tokenizer, image_processor, data_module = build(model_args, data_args, training_args)
    trainer = DualFocusTrainer(
        model=model, args=training_args, processing_class=tokenizer, image_processor=image_processor,
        lora_enable=training_args.lora_enable, lora_bias=training_args.lora_bias,
        tune_mm_mlp_adapter=model_args.tune_mm_mlp_adapter, include_vision_tower=model_args.tune_vit,
        **data_module,
    )
    resume = bool(list(pathlib.Path(training_args.output_dir).glob("checkpoint-*")))  # LLaVA: resume if any
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    return trainer


def main() -> None:
    train(sys.argv[1:])


if __name__ == "__main__":
    main()
