#!/bin/bash
# eval_vstar.sh CKPT [runner args...]: DualFocus on V*Bench, on this machine.
#
# As eval_seed.sh (shards, merge, score; rerun to resume), with V*Bench's release layout:
# Data: $DATA_ROOT/vstar_bench/test_questions.jsonl, images under vstar_bench/ (the Hugging Face
# dataset craigwu/vstar_bench as downloaded). Score: accuracy per category and overall
# (merge_score.json beside the answers). Environment: as eval_seed.sh. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_local vstar "$@"
