#!/bin/bash
# slurm_eval_gqa.sh CKPT [PARTITION [JOB_NAME [QUOTA_TYPE]]] [-- runner args...]: DualFocus on
# GQA (multiple choice), one srun task per GPU.
#
# srun --ntasks=GPUS --ntasks-per-node=GPUS_PER_NODE --gres=gpu:GPUS_PER_NODE --kill-on-bad-exit=1;
# each task answers chunk SLURM_PROCID of SLURM_NTASKS on GPU SLURM_LOCALID; then merge and score
# here. Inside an allocation (sbatch, salloc) the tasks run as a step of it. Rerun to resume.
# PARTITION: default the cluster's; QUOTA_TYPE: passed as --quotatype only when given (a site
# plugin: plain Slurm rejects it). Data, answers and score as eval_gqa.sh; logs/task_<n>.log.
# Environment: GPUS (8; inside an allocation SLURM_NTASKS), GPUS_PER_NODE (min(8, GPUS)),
# CPUS_PER_TASK (8), SRUN_ARGS, and eval_gqa.sh's DATA_ROOT, SPLIT, IMAGE_FOLDER, MODEL_BASE,
# CONV_MODE, CKPT_NAME, PYTHON. See README.md.

set -euo pipefail
# shellcheck source=scripts/eval/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
df_eval_slurm gqa "$@"
