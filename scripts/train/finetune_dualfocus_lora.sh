#!/bin/bash
# finetune_dualfocus_lora.sh MODEL DATA_PATH IMAGE_FOLDER OUTPUT_DIR [-- extra train args...]
#
# DualFocus LoRA fine-tuning (LLaVA-1.5's finetune_lora.sh values: r 128, alpha 256, lr 2e-4,
# projector lr 2e-5). The output is LLaVA's LoRA layout; load it with MODEL as the base:
#   load_pretrained_model(OUTPUT_DIR, model_base=MODEL)      (eval scripts: MODEL_BASE=MODEL)
# QLoRA: add -- --bits 4 (needs bitsandbytes and a CUDA GPU). Launch and environment as
# finetune_dualfocus.sh.
set -euo pipefail
case ${1:-} in -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;; esac
if [ $# -lt 4 ]; then
    sed -n '2,8p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
export LR=${LR:-2e-4}
export DF_MODE_ARGS="--lora_enable True --lora_r ${LORA_R:-128} --lora_alpha ${LORA_ALPHA:-256} --mm_projector_lr ${MM_PROJECTOR_LR:-2e-5}"
export DF_SCRIPT_NAME=${DF_SCRIPT_NAME:-$(basename "$0")}  # what messages name: the script the user ran
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune_dualfocus.sh" "$@"
