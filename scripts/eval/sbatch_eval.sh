#!/bin/bash
#SBATCH --job-name=dualfocus_eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --output=slurm-%x-%j.out
# sbatch [sbatch options] scripts/eval/sbatch_eval.sh BENCH CKPT [-- runner args...]
#
# The batch form of slurm_eval_<BENCH>.sh (BENCH: python -m dualfocus.benchmarks names): queue it and
# walk away. Inside the allocation it runs slurm_eval_<BENCH>.sh, whose srun step has one task per
# allocated task (GPUS = SLURM_NTASKS, GPUS_PER_NODE = SLURM_NTASKS_PER_NODE, CPUS_PER_TASK =
# SLURM_CPUS_PER_TASK), then merges and scores; the job's exit status is that of the whole (0 only
# when every task, the merge and the scorer succeeded). The headers ask for one node with 8 GPUs;
# change the shape on the command line, e.g. 2 nodes x 8 GPUs, or 2 GPUs on one node:
#   sbatch -p PARTITION --nodes=2 scripts/eval/sbatch_eval.sh seed /ckpts/DualFocus-LLaVA-1.5-7B
#   sbatch --ntasks-per-node=2 --gres=gpu:2 scripts/eval/sbatch_eval.sh gqa /ckpts/DualFocus-LLaVA-1.5-7B
# Submit from the repository root (Slurm runs a copy of this file; the job starts in the submit
# directory, where DATA_ROOT is looked up), or set DUALFOCUS_ROOT. The job's own log is
# slurm-<job name>-<job id>.out; each task's is <answers>/logs/task_<n>.log. Environment variables
# of slurm_eval_<BENCH>.sh (DATA_ROOT, MODEL_BASE, ...) pass through sbatch. See README.md.

set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help || $# -lt 2 ]]; then
    sed -n '/^# sbatch/,/^$/{s/^# \{0,1\}//;p}' "$0"
    [[ ${1:-} == -h || ${1:-} == --help ]] && exit 0
    exit 2
fi
bench=$1
shift
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    echo "sbatch_eval: not inside a Slurm allocation; queue it: sbatch scripts/eval/sbatch_eval.sh $bench $*" >&2
    exit 2
fi
# Slurm runs a copy of this script from its spool directory: find the scripts beside the checkout.
for dir in "${DUALFOCUS_ROOT:+$DUALFOCUS_ROOT/scripts/eval}" "$(dirname "$0")" "${SLURM_SUBMIT_DIR:-.}/scripts/eval"; do
    [[ -n $dir && -f $dir/slurm_eval_$bench.sh ]] && break
    dir=""
done
[[ -n $dir ]] || { echo "sbatch_eval: no slurm_eval_$bench.sh: submit from the repository root or set DUALFOCUS_ROOT" >&2; exit 2; }

ckpt=$1
shift
(($# == 0)) || [[ $1 == -- ]] || { echo "sbatch_eval: runner arguments go after '--'" >&2; exit 2; }
(($#)) && shift
echo "sbatch_eval: job $SLURM_JOB_ID ($SLURM_NTASKS task(s) on $SLURM_JOB_NUM_NODES node(s)): $dir/slurm_eval_$bench.sh $ckpt"
exec bash "$dir/slurm_eval_$bench.sh" "$ckpt" -- "$@"
