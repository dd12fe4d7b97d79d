#!/bin/bash
# eval_gqa.sh CKPT [runner args...]: DualFocus on GQA (multiple choice), on this machine.
#
# One runner process per GPU in CUDA_VISIBLE_DEVICES (unset: every GPU nvidia-smi lists; set and
# empty: no GPU), or CHUNKS CPU processes (default 1) without a GPU; waits on every shard, fails
# naming the failed ones; merges (every question exactly once) and scores. Rerun to resume.
# Data: $DATA_ROOT/gqa/llava_gqa_testdev_balanced_mcq.jsonl, images under gqa/data/images/
# Answers: $DATA_ROOT/<bench>/answers/<split>/<name>/{N}_{i}.jsonl, merge.jsonl, logs/{N}_{i}.log
# Score: testdev_balanced_predictions.json beside the answers; accuracy when gqa/data/testdev_balanced_questions.json is there
# Environment: DATA_ROOT (./playground/data/eval), SPLIT, IMAGE_FOLDER, MODEL_BASE, CONV_MODE
# (vicuna_v1), CHUNKS, CKPT_NAME (default: the checkpoint's basename), PYTHON. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_local gqa "$@"
