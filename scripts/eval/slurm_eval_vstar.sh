#!/bin/bash
# slurm_eval_vstar.sh CKPT [PARTITION [JOB_NAME [QUOTA_TYPE]]] [-- runner args...]: DualFocus on
# V*Bench, one srun task per GPU.
#
# As slurm_eval_seed.sh (srun tasks, merge, score; rerun to resume); data and score as eval_vstar.sh.
# Environment: as slurm_eval_seed.sh. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_slurm vstar "$@"
