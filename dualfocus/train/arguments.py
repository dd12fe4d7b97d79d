"""Command-line arguments of `python -m dualfocus.train.train`: LLaVA's names, DualFocus's additions.

Three dataclasses, parsed by `transformers.HfArgumentParser` as LLaVA's ``train.py`` does:
`ModelArguments` (what to train), `DataArguments` (what to train on) and `TrainingArguments`
(transformers' own plus LLaVA's LoRA/QLoRA/projector fields). Defaults that differ from LLaVA's are
marked; they are LLaVA-1.5's script values, so a DualFocus run needs fewer flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=None,
        metadata={"help": "A LLaVA checkpoint (original or llava-hf layout: continue fine-tuning, the usual "
                          "DualFocus case) or a plain Llama/Vicuna (then --vision_tower is needed)."},
    )
    version: str = field(default="v1", metadata={"help": "Conversation template (LLaVA's name; v1 = vicuna_v1). "
                                                          "LLaVA's default is v0; LLaVA-1.5 scripts pass v1."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Freeze the language model (LLaVA)."})
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "Train the projector only; save mm_projector.bin."})
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP vision tower (dir or hub id) for a plain LLM."})
    mm_vision_select_layer: int = field(default=-2, metadata={"help": "LLaVA's default is -1; LLaVA-1.5 uses -2."})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": "mm_projector.bin from pretraining."})
    mm_projector_type: str = field(default="mlp2x_gelu", metadata={"help": "linear | mlp<N>x_gelu | identity "
                                                                            "(LLaVA's default is linear)."})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "Not supported (LLaVA-1.5 does not use it)."})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "Add <im_patch> to the tokenizer (LLaVA's "
                                                                          "default is True; LLaVA-1.5 passes False)."})
    mm_vision_select_feature: str = field(default="patch", metadata={"help": "patch | cls_patch"})
    tune_vit: bool = field(default=False, metadata={"help": "Also train the vision tower (DualFocus's flag); the "
                                                             "checkpoint then carries the tower."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa | eager | flash_attention_2; default: flash_attention_2 on CUDA when "
                                        "flash-attn is installed, sdpa otherwise."})


@dataclass
class DataArguments:
    data_path: str = field(default=None, metadata={"help": "LLaVA conversation JSON list (or JSONL); records may "
                                                           "carry sub_area (see docs/training.md)."})
    lazy_preprocess: bool = field(default=False, metadata={"help": "Accepted for LLaVA's scripts; always lazy."})
    is_multimodal: bool = False
    image_folder: str | None = field(default=None, metadata={"help": "Where relative `image` paths are found."})
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad | square (LLaVA's default is square; "
                                                                      "LLaVA-1.5 uses pad)."})
    image_grid_pinpoints: str | None = field(default=None, metadata={"help": "Not supported (LLaVA-NeXT anyres)."})
    # DualFocus's flags.
    process_sub_area: bool = field(default=True, metadata={"help": "Crop the sub_area squared + padded like "
                                                                    "inference; False: the box as it is."})
    round2_only: bool = field(default=False, metadata={"help": "Label only the rounds after the first (the box "
                                                                "answer becomes context)."})
    draw_sub_region: bool = field(default=False, metadata={"help": "Draw the sub_area outline (green, 5 px) before "
                                                                    "cropping, as the original: it shows in the crop."})
    # Ours.
    sub_area_units: str = field(default="auto", metadata={"help": "auto | normalized | pixel. auto: all four in "
                                                                   "[0, 1] -> normalized, else pixels."})
    sub_area_pad: int = field(default=25, metadata={"help": "Pixels added around the squared box (inference: 25)."})
    check_images: bool = field(default=True, metadata={"help": "Open every image's header before training: missing "
                                                                "files and boxes outside images fail up front."})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    model_max_length: int = field(default=2048, metadata={"help": "Maximum sequence length in tokens (LLaVA's "
                                                                   "default is 512; LLaVA-1.5 uses 2048)."})
    double_quant: bool = field(default=True, metadata={"help": "QLoRA: double quantization."})
    quant_type: str = field(default="nf4", metadata={"help": "QLoRA: fp4 | nf4."})
    bits: int = field(default=16, metadata={"help": "16, or 4/8 for QLoRA (bitsandbytes, CUDA)."})
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    group_by_modality_length: bool = field(default=False)
    # Names LLaVA's scripts pass that transformers 5 dropped: mapped onto the new ones.
    warmup_ratio: float | None = field(default=None, metadata={"help": "= --warmup_steps RATIO (transformers 5)."})
    evaluation_strategy: str | None = field(default=None, metadata={"help": "= --eval_strategy (transformers 5)."})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ValueError("pass --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio  # transformers 5: a value < 1 is a ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        super().__post_init__()


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    check_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Refuse combinations that would train something other than what was asked."""
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if not data_args.data_path:
        raise ValueError("--data_path is required")
    if model_args.mm_use_im_start_end:
        raise ValueError("--mm_use_im_start_end True is not supported: LLaVA-1.5 and the DualFocus inference "
                         "pipeline use bare <image> markers")
    if data_args.image_grid_pinpoints:
        raise ValueError("--image_grid_pinpoints (anyres) is not supported: LLaVA-1.5 uses one image per <image>")
    if data_args.image_aspect_ratio not in ("pad", "square"):
        raise ValueError(f"--image_aspect_ratio must be pad or square, got {data_args.image_aspect_ratio!r}")
    if data_args.sub_area_units not in ("auto", "normalized", "pixel"):
        raise ValueError(f"--sub_area_units must be auto, normalized or pixel, got {data_args.sub_area_units!r}")
    if data_args.sub_area_pad < 0:
        raise ValueError(f"--sub_area_pad must be >= 0, got {data_args.sub_area_pad}")
    if training_args.bits not in (4, 8, 16):
        raise ValueError(f"--bits must be 4, 8 or 16, got {training_args.bits}")
    if training_args.bits in (4, 8) and not training_args.lora_enable:
        raise ValueError(f"--bits {training_args.bits} trains LoRA adapters on a quantized model: add --lora_enable True")
    if training_args.lora_enable and model_args.tune_mm_mlp_adapter:
        raise ValueError("--lora_enable and --tune_mm_mlp_adapter exclude each other")
    if training_args.lora_bias not in ("none", "all", "lora_only"):
        raise ValueError(f"--lora_bias must be none, all or lora_only, got {training_args.lora_bias!r}")
    if training_args.lora_weight_path:
        raise ValueError("--lora_weight_path is not supported (LLaVA never reads it either)")
