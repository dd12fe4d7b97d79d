"""DualFocus supervised fine-tuning on LLaVA-1.5 (full, LoRA, QLoRA; DeepSpeed ZeRO-2/3).

  arguments   LLaVA's command-line names, DualFocus's flags (process_sub_area, round2_only, draw_sub_region)
  data        records, up-front validation, the sub_area crop as the second image, the collator
  model       the model to train: a LLaVA checkpoint, or a plain Llama + a vision tower
  lora        peft LoRA/QLoRA and LLaVA's LoRA checkpoint layout
  trainer     the Trainer: length/modality sampler, projector learning rate, checkpoint layouts
  train       `python -m dualfocus.train.train`
  build_data  `python -m dualfocus.train.build_data`: region-annotated QA -> DualFocus records
See docs/training.md.
"""
