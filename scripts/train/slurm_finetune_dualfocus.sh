#!/bin/bash
# slurm_finetune_dualfocus.sh full|lora MODEL DATA_PATH IMAGE_FOLDER OUTPUT_DIR [-- extra train args...]
#
# The same run as finetune_dualfocus[_lora].sh on Slurm: one srun task per GPU
# (--ntasks=GPUS --ntasks-per-node=GPUS_PER_NODE --gres=gpu:GPUS_PER_NODE --kill-on-bad-exit=1);
# task SLURM_PROCID is rank RANK on GPU SLURM_LOCALID, the step's first node the rendezvous.
# Inside an allocation (sbatch, salloc) the tasks run as a step of it.
# Environment: GPUS (8; inside an allocation SLURM_NTASKS), GPUS_PER_NODE (min(8, GPUS)),
# CPUS_PER_TASK (8), PARTITION, JOB_NAME (dualfocus-train), SRUN_ARGS, MASTER_PORT (29500),
# and finetune_dualfocus.sh's.
set -euo pipefail
DF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
    sed -n '2,10p' "${BASH_SOURCE[0]}"
    exit 0
fi
if [ $# -lt 5 ] || { [ "$1" != full ] && [ "$1" != lora ]; }; then
    sed -n '2,10p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
MODE=$1
shift
SCRIPT=$DF_DIR/finetune_dualfocus.sh
[ "$MODE" = lora ] && SCRIPT=$DF_DIR/finetune_dualfocus_lora.sh

GPUS=${GPUS:-${SLURM_NTASKS:-8}}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
SRUN=(srun --job-name="${JOB_NAME:-dualfocus-train}" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE"
      --gres=gpu:"$GPUS_PER_NODE" --cpus-per-task="${CPUS_PER_TASK:-8}" --kill-on-bad-exit=1)
[ -n "${PARTITION:-}" ] && SRUN+=(--partition="$PARTITION")
# shellcheck disable=SC2206  # word splitting wanted: extra srun flags
SRUN+=(${SRUN_ARGS:-})
export DF_SLURM_TASK=1 MASTER_PORT=${MASTER_PORT:-29500}
exec "${SRUN[@]}" bash "$SCRIPT" "$@"
