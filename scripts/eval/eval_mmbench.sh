#!/bin/bash
# eval_mmbench.sh CKPT [runner args...]: DualFocus on MMBench, on this machine.
#
# One runner process per GPU in CUDA_VISIBLE_DEVICES (unset: every GPU nvidia-smi lists; set and
# empty: no GPU), or CHUNKS CPU processes (default 1) without a GPU; waits on every shard, fails
# naming the failed ones; merges (every question exactly once) and scores. Rerun to resume.
# Data: $DATA_ROOT/mmbench/mmbench_dev_20230712.tsv (images inside)
# Answers: $DATA_ROOT/<bench>/answers/<split>/<name>/{N}_{i}.jsonl, merge.jsonl, logs/{N}_{i}.log
# Score: mmbench/answers_upload/<split>/<name>/merge.xlsx and, with answers in the TSV, the accuracy
# Environment: DATA_ROOT (./playground/data/eval), SPLIT, IMAGE_FOLDER, MODEL_BASE, CONV_MODE
# (vicuna_v1), CHUNKS, CKPT_NAME (default: the checkpoint's basename), PYTHON. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_local mmbench "$@"
