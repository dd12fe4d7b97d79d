#!/bin/bash
# eval_seed.sh CKPT [runner args...]: DualFocus on SEED-Bench (image), on this machine.
#
# One runner process per GPU in CUDA_VISIBLE_DEVICES (unset: every GPU nvidia-smi lists; set and
# empty: no GPU), or CHUNKS CPU processes (default 1) without a GPU; waits on every shard, fails
# naming the failed ones; merges (every question exactly once) and scores. Rerun to resume.
# Data: $DATA_ROOT/seed_bench/llava-seed-bench-image.jsonl, images under seed_bench/
# Answers: $DATA_ROOT/<bench>/answers/<split>/<name>/{N}_{i}.jsonl, merge.jsonl, logs/{N}_{i}.log
# Score: seed_bench/answers_upload/<split>/<name>.jsonl and the accuracy per question type
# Environment: DATA_ROOT (./playground/data/eval), SPLIT, IMAGE_FOLDER, MODEL_BASE, CONV_MODE
# (vicuna_v1), CHUNKS, CKPT_NAME (default: the checkpoint's basename), PYTHON. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_local seed "$@"
