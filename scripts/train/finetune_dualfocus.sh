#!/bin/bash
# finetune_dualfocus.sh MODEL DATA_PATH IMAGE_FOLDER OUTPUT_DIR [-- extra train args...]
#
# DualFocus full fine-tuning from a LLaVA-1.5 checkpoint (e.g. liuhaotian/llava-v1.5-7b), DeepSpeed
# ZeRO-3, LLaVA-1.5's finetune.sh hyperparameters. Extra arguments are appended, so they override
# (e.g. -- --num_train_epochs 2 --round2_only True). DATA_PATH: records from
# `python -m dualfocus.train.build_data` or any LLaVA conversation JSON (see docs/training.md).
#
# Launch: torchrun, GPUS processes on this node (default: the GPUs nvidia-smi lists, else 1);
# several nodes with NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT. Under slurm_finetune_dualfocus.sh
# (DF_SLURM_TASK=1) each srun task is one rank and runs Python directly.
# Environment: GPUS, NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500),
# DEEPSPEED_CONFIG (scripts/train/zero3.json), PRECISION_ARGS ("--bf16 True --tf32 True"),
# PER_DEVICE_BATCH (16), GRAD_ACCUM (1), LR (2e-5), VERSION (v1), PYTHON (python).
# Without a CUDA GPU it stops before launching unless the precision is fp32 (PRECISION_ARGS="").
set -euo pipefail
DF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$DF_DIR/../.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

case ${1:-} in -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;; esac
if [ $# -lt 4 ]; then
    sed -n '2,16p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
MODEL=$1 DATA_PATH=$2 IMAGE_FOLDER=$3 OUTPUT_DIR=$4
shift 4
[ "${1:-}" = "--" ] && shift

LR=${LR:-2e-5}
TRAIN_ARGS=(
    --deepspeed "${DEEPSPEED_CONFIG:-$DF_DIR/zero3.json}"
    --model_name_or_path "$MODEL"
    --version "${VERSION:-v1}"
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --image_aspect_ratio pad
    --process_sub_area True
    --group_by_modality_length True
    --output_dir "$OUTPUT_DIR"
    --num_train_epochs 1
    --per_device_train_batch_size "${PER_DEVICE_BATCH:-16}"
    --gradient_accumulation_steps "${GRAD_ACCUM:-1}"
    --eval_strategy no
    --save_strategy steps --save_steps 50000 --save_total_limit 1
    --learning_rate "$LR" --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type cosine
    --logging_steps 1
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --report_to "${REPORT_TO:-none}"
)
# shellcheck disable=SC2206  # word splitting wanted: lists of flags
PRECISION=(${PRECISION_ARGS---bf16 True --tf32 True})
# shellcheck disable=SC2206
MODE_ARGS=(${DF_MODE_ARGS:-})   # set by finetune_dualfocus_lora.sh

df_launch() {
    if [ "${DF_SLURM_TASK:-0}" = 1 ]; then
        # one srun task = one rank; the first node of the step is the rendezvous
        export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
        MASTER_ADDR=$(scontrol show hostnames "${SLURM_STEP_NODELIST:-$SLURM_JOB_NODELIST}" | head -n1)
        export MASTER_ADDR MASTER_PORT=${MASTER_PORT:-29500}
        exec "${PYTHON:-python}" -m dualfocus.train.train "$@"
    fi
    local gpus=${GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}
    [ "${gpus:-0}" -ge 1 ] || gpus=1
    exec "${PYTHON:-python}" -m torch.distributed.run --nproc_per_node "$gpus" --nnodes "${NNODES:-1}" \
        --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" \
        --master_port "${MASTER_PORT:-29500}" -m dualfocus.train.train "$@"
}

# The half-precision flags that end up True: the last value of each wins, as in HfArgumentParser;
# a bare flag means True.
gpu_precision() {
    local args=("$@") i value
    local -A last=()
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
            --bf16|--fp16|--tf32)
                value=${args[i + 1]:---}
                [[ $value == --* ]] && value=True
                last[${args[i]}]=$value ;;
            --bf16=*|--fp16=*|--tf32=*) last[${args[i]%%=*}]=${args[i]#*=} ;;
        esac
    done
    for i in "${!last[@]}"; do
        case ${last[$i],,} in true|1|yes) echo "$i True" ;; esac
    done | sort | paste -sd' ' -
}

# transformers refuses bf16/fp16/tf32 without a GPU ("Your setup doesn't support bf16/gpu"), after
# the model has loaded: say how to run in fp32 before anything starts.
check_precision() {
    local wanted
    wanted=$(gpu_precision "$@")
    [ -n "$wanted" ] || return 0
    "${PYTHON:-python}" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' && return 0
    echo "${DF_SCRIPT_NAME:-$(basename "$0")}: no CUDA GPU here, and '$wanted' needs one; on a CPU train in fp32:" \
         "set PRECISION_ARGS=\"\" (or append -- --bf16 False --tf32 False)" >&2
    exit 2
}

check_precision "${PRECISION[@]}" "$@"
df_launch "${TRAIN_ARGS[@]}" ${MODE_ARGS[@]+"${MODE_ARGS[@]}"} "${PRECISION[@]}" "$@"
