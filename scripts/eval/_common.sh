# shellcheck shell=bash
# Shared by scripts/eval/{eval,slurm_eval}_<bench>.sh; sourced, never run. See README.md.
#
# What lives here: the process fan-out: one runner per GPU (or CHUNKS CPU processes) on this
# machine, or one srun task per GPU on Slurm; waiting on every shard; the checked merge; the scorer.
# Everything else (each benchmark's files, runner and scorer: its module in dualfocus/benchmarks/,
# asked through `python -m dualfocus.benchmarks`; what a shard answers, resuming, the merge check,
# scoring) is Python's job.

DF_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DF_REPO_ROOT=$(cd "$DF_SCRIPTS_DIR/../.." && pwd)
# The package runs from this checkout whatever the working directory (as the original's PYTHONPATH).
export PYTHONPATH="$DF_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

PYTHON=${PYTHON:-python}
DATA_ROOT=${DATA_ROOT:-./playground/data/eval}
CONV_MODE=${CONV_MODE:-vicuna_v1}
MODEL_BASE=${MODEL_BASE:-}

df_say() { echo "$DF_PROG: $*"; }
df_die() { echo "$DF_PROG: error: $*" >&2; exit 1; }

# df_benchmark NAME: the benchmark's files and commands, from its registered layout in Python
# (`python -m dualfocus.benchmarks defaults NAME`: LLaVA's playground layout and splits).
# Sets BENCH_DIR, SPLIT, RUNNER, QUESTION_FILE, RUNNER_ARGS (array); df_score does the scoring.
# IMAGE_FOLDER, when set, replaces the benchmark's image folder (e.g. GQA images kept elsewhere).
df_benchmark() {
    DF_BENCH=$1
    # DEFAULT_SPLIT, QUESTION_SUFFIX and WHOLE_SPLIT stay set for df_split_hint.
    local defaults BENCH_FOLDER IMAGES_IN_FILE IMAGE_SUBDIR RUNNER_FLAGS
    defaults=$("$PYTHON" -m dualfocus.benchmarks defaults "$1") || df_die "no benchmark '$1' (see above)"
    eval "$defaults"
    BENCH_DIR=$DATA_ROOT/$BENCH_FOLDER
    SPLIT=${SPLIT:-$DEFAULT_SPLIT}
    QUESTION_FILE=$BENCH_DIR/$SPLIT$QUESTION_SUFFIX
    RUNNER_ARGS=("${RUNNER_FLAGS[@]}")
    local images=""
    [[ -z $IMAGES_IN_FILE ]] && images=$BENCH_DIR${IMAGE_SUBDIR:+/$IMAGE_SUBDIR}
    images=${IMAGE_FOLDER:-$images}
    [[ -n $images ]] && RUNNER_ARGS+=(--image-folder "$images")
    RUNNER_ARGS+=(--question-file "$QUESTION_FILE" --temperature 0 --conv-mode "$CONV_MODE")
}

# The default file may be a subset of a larger one LLaVA ships (SEED's image-only questions): when
# only the larger is here, say which SPLIT to pass.
df_split_hint() {
    if [[ -n $WHOLE_SPLIT && $SPLIT == "$DEFAULT_SPLIT" && -f $BENCH_DIR/$WHOLE_SPLIT$QUESTION_SUFFIX ]]; then
        echo ". It is a subset of LLaVA's $WHOLE_SPLIT$QUESTION_SUFFIX, which is here: rerun with" \
            "SPLIT=$WHOLE_SPLIT"
    fi
}

# df_score MERGED: the benchmark's official scorer on the merged answers; its submission file goes
# to $BENCH_DIR/answers_upload/<split>/<checkpoint>[.jsonl|/merge.xlsx|...] (see the benchmark module).
df_score() {
    "$PYTHON" -m dualfocus.benchmarks score "$DF_BENCH" --result-file "$1" --question-file "$QUESTION_FILE" \
        --bench-dir "$BENCH_DIR" --upload "$BENCH_DIR/answers_upload/$SPLIT/$CKPT_NAME"
}

# df_checkpoint CKPT: CKPT_NAME (the checkpoint's basename, or $CKPT_NAME) and ANSWERS_DIR.
df_checkpoint() {
    [[ -n ${1:-} ]] || df_die "no checkpoint given (see --help)"
    CKPT=$1
    CKPT_NAME=${CKPT_NAME:-$(basename -- "$CKPT")}   # basename drops trailing slashes
    case $CKPT_NAME in
        ""|/|.|..) df_die "cannot name the answers after checkpoint '$CKPT'; set CKPT_NAME" ;;
        */*) df_die "CKPT_NAME='$CKPT_NAME' is not a plain name (it has a '/'; answers must stay under" \
            "DATA_ROOT): give a name without '/'" ;;
    esac
    [[ -f $QUESTION_FILE ]] || df_die "no question file $QUESTION_FILE (DATA_ROOT=$DATA_ROOT; run from the" \
        "repository root or set DATA_ROOT; layout: playground/data/eval/README.md)$(df_split_hint)"
    ANSWERS_DIR=$BENCH_DIR/answers/$SPLIT/$CKPT_NAME
    LOG_DIR=$ANSWERS_DIR/logs
    mkdir -p "$LOG_DIR"
    MODEL_ARGS=(--model-path "$CKPT")
    [[ -n $MODEL_BASE ]] && MODEL_ARGS+=(--model-base "$MODEL_BASE")
    return 0
}

# df_usage: the calling script's header comment (the lines after the shebang up to the first blank).
df_usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0; }

# df_merge_and_score N: merge N_0..N_{N-1}.jsonl, checked against the question file, then score.
df_merge_and_score() {
    local n=$1 i shards=()
    for ((i = 0; i < n; i++)); do shards+=("$ANSWERS_DIR/${n}_$i.jsonl"); done
    "$PYTHON" -m dualfocus.eval.merge --inputs "${shards[@]}" --output "$ANSWERS_DIR/merge.jsonl" \
        --question-file "$QUESTION_FILE" || df_die "merge failed (see above); rerun to resume the missing questions"
    df_score "$ANSWERS_DIR/merge.jsonl" || df_die "scoring $ANSWERS_DIR/merge.jsonl failed (see above)"
    df_say "done: $ANSWERS_DIR/merge.jsonl"
}

# df_describe_status STATUS: "exit status 3" or "killed by SIGKILL (exit status 137)".
df_describe_status() {
    if (($1 > 128 && $1 < 160)); then
        echo "killed by SIG$(kill -l $(($1 - 128))) (exit status $1)"
    else
        echo "exit status $1"
    fi
}

# df_rerun_advice STATUS...: what a rerun does. Killed shards resume; a shard that stopped on an
# error (exit status 1: a checkpoint that cannot load, a full disk, ...) stops again until its cause,
# printed above, is fixed.
df_rerun_advice() {
    local s killed_only=1
    for s in "$@"; do ((s > 128)) || killed_only=0; done
    if ((killed_only)); then
        echo "$DF_PROG: rerun the same command to resume (answered questions are skipped, failed ones asked again)"
    else
        echo "$DF_PROG: fix the cause shown above, then rerun the same command (answered questions are" \
            "skipped, failed ones asked again)"
    fi
}

# df_task_list "0-2,5": srun's task ranges, one number a line (0 1 2 5).
df_task_list() {
    local part
    for part in ${1//,/ }; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}

# ---------------------------------------------------------------------------------------------
# eval_<bench>.sh CKPT [runner args...]: one process per GPU here, or CHUNKS CPU processes.
df_eval_local() {
    DF_PROG=$(basename "$0" .sh)
    df_benchmark "$1"; shift
    [[ ${1:-} == -h || ${1:-} == --help ]] && df_usage
    df_checkpoint "${1:-}"; shift

    # Devices: CUDA_VISIBLE_DEVICES when set (set and empty: no GPU), else every GPU nvidia-smi lists.
    local devices=() gpus
    if [[ -v CUDA_VISIBLE_DEVICES ]]; then
        gpus=$CUDA_VISIBLE_DEVICES
    elif command -v nvidia-smi > /dev/null 2>&1; then
        gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null | paste -sd, -) || gpus=""
    else
        gpus=""
    fi
    IFS=',' read -ra devices <<< "${gpus// /}"
    local n shard_env=()
    if ((${#devices[@]})); then
        n=${#devices[@]}
        [[ -n ${CHUNKS:-} && $CHUNKS != "$n" ]] &&
            df_say "note: CHUNKS=$CHUNKS ignored: one process per GPU in CUDA_VISIBLE_DEVICES=$gpus"
    else
        n=${CHUNKS:-1}
        [[ $n =~ ^[1-9][0-9]*$ ]] || df_die "CHUNKS must be a positive integer, got '$n'"
        # n processes share the CPUs: without this each would start one thread per core.
        [[ -v OMP_NUM_THREADS ]] || shard_env+=(OMP_NUM_THREADS=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 )))
    fi

    local pids=() i
    trap 'df_say "interrupted: stopping shards ${pids[*]}"; kill "${pids[@]}" 2> /dev/null; wait; exit 130' INT TERM
    df_say "$n shard(s) of $QUESTION_FILE -> $ANSWERS_DIR"
    for ((i = 0; i < n; i++)); do
        local log=$LOG_DIR/${n}_$i.log device=${devices[$i]:-}
        echo "=== $(date '+%F %T') shard $i/$n on ${device:+GPU }${device:-CPU}" >> "$log"
        env CUDA_VISIBLE_DEVICES="$device" "${shard_env[@]}" \
            "$PYTHON" -m "$RUNNER" "${MODEL_ARGS[@]}" "${RUNNER_ARGS[@]}" \
            --answers-file "$ANSWERS_DIR/${n}_$i.jsonl" --num-chunks "$n" --chunk-idx "$i" \
            "$@" >> "$log" 2>&1 &
        pids+=($!)
        df_say "shard $i/$n: pid $!, ${device:+GPU }${device:-CPU}, log $log"
    done

    # Wait on every shard, each by its PID, so a dead shard is never hidden behind a live one.
    local failed=() status
    for ((i = 0; i < n; i++)); do
        status=0
        wait "${pids[$i]}" || status=$?
        ((status == 0)) || failed+=("$i:$status")
    done
    trap - INT TERM
    if ((${#failed[@]})); then
        {
            echo "$DF_PROG: ${#failed[@]} of $n shard(s) failed:"
            local f
            for f in "${failed[@]}"; do
                i=${f%%:*}
                echo "  shard $i/$n (pid ${pids[$i]}): $(df_describe_status "${f#*:}"); log: $LOG_DIR/${n}_$i.log"
                tail -n 5 "$LOG_DIR/${n}_$i.log" | sed 's/^/    | /'
            done
            df_rerun_advice "${failed[@]#*:}"
        } >&2
        exit 1
    fi
    df_merge_and_score "$n"
}

# ---------------------------------------------------------------------------------------------
# slurm_eval_<bench>.sh CKPT [PARTITION [JOB_NAME [QUOTA_TYPE]]] [-- runner args...]
df_eval_slurm() {
    DF_PROG=$(basename "$0" .sh)
    df_benchmark "$1"; shift
    [[ ${1:-} == -h || ${1:-} == --help ]] && df_usage
    command -v srun > /dev/null 2>&1 ||
        df_die "srun is not installed here (no Slurm client): run on a Slurm login node, or use" \
            "eval_$DF_BENCH.sh on this machine"
    local positional=()
    while (($#)) && [[ $1 != -- ]]; do positional+=("$1"); shift; done
    (($#)) && shift   # the "--"
    ((${#positional[@]} <= 4)) || df_die "too many arguments before '--': ${positional[*]:4} (see --help)"
    df_checkpoint "${positional[0]:-}"
    local partition=${positional[1]:-${PARTITION:-}}
    local job_name=${positional[2]:-${JOB_NAME:-dualfocus_$DF_BENCH}}
    local quota_type=${positional[3]:-${QUOTA_TYPE:-}}

    # Inside an allocation (sbatch, salloc) its shape is the default; else the original's 8 per node.
    local in_job=${SLURM_JOB_ID:-}
    local gpus=${GPUS:-${in_job:+${SLURM_NTASKS:-}}}
    gpus=${gpus:-8}
    local per_node=${GPUS_PER_NODE:-${in_job:+${SLURM_NTASKS_PER_NODE:-}}}
    per_node=${per_node:-$((gpus < 8 ? gpus : 8))}
    local cpus=${CPUS_PER_TASK:-${in_job:+${SLURM_CPUS_PER_TASK:-}}}
    cpus=${cpus:-8}

    local srun_args=()
    if [[ -n $in_job ]]; then
        df_say "inside job $in_job: running the tasks as a step of it"
        [[ -n $partition ]] && df_say "note: partition '$partition' ignored inside an allocation"
    elif [[ -n $partition ]]; then
        srun_args+=(-p "$partition")
    fi
    srun_args+=(--job-name="$job_name" --gres=gpu:"$per_node" --ntasks="$gpus" --ntasks-per-node="$per_node"
        --cpus-per-task="$cpus" --kill-on-bad-exit=1
        --output="$LOG_DIR/task_%t.log" --open-mode=append)
    # A site plugin's option (e.g. Shanghai AI Lab's clusters); plain Slurm rejects it.
    [[ -n $quota_type ]] && srun_args+=(--quotatype="$quota_type")
    # shellcheck disable=SC2206 # SRUN_ARGS is a list of options, split on spaces as in the original
    srun_args+=(${SRUN_ARGS:-})

    # Each task: its chunk (SLURM_PROCID of SLURM_NTASKS) and GPU (SLURM_LOCALID) come from the
    # environment in the runner; only its answer file is named here, by the same variables.
    # shellcheck disable=SC2016 # expanded by each task's bash, not here
    local task='export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
        echo "=== $(date "+%F %T") task $SLURM_PROCID/$SLURM_NTASKS on $(hostname -s), pid $$," \
            "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}, SLURM_LOCALID=$SLURM_LOCALID"
        exec "$@" --answers-file "$0/${SLURM_NTASKS}_${SLURM_PROCID}.jsonl"'
    local srun_log=$LOG_DIR/srun.log status=0
    local -; set -o pipefail   # the pipeline's status is srun's (tee's is 0)
    df_say "srun ${srun_args[*]} -> $ANSWERS_DIR (task logs: $LOG_DIR/task_<n>.log)"
    srun "${srun_args[@]}" bash -c "$task" "$ANSWERS_DIR" \
        "$PYTHON" -u -m "$RUNNER" "${MODEL_ARGS[@]}" "${RUNNER_ARGS[@]}" "$@" 2>&1 | tee "$srun_log" ||
        status=$?
    if ((status != 0)); then
        if ((status == 255)) && grep -q "unrecognized option.*quotatype" "$srun_log"; then
            df_die "this cluster's srun has no --quotatype (a site plugin, not Slurm's): run again" \
                "without QUOTA_TYPE (the 4th argument / environment variable)"
        fi
        {
            echo "$DF_PROG: srun failed (exit status $status; srun's log: $srun_log)"
            local line t how
            # srun names each task that ended badly: "srun: error: <node>: task 1: Exited with exit
            # code 3" (or "Killed"; several at once: "tasks 0-1,3: ..."); the others were stopped by
            # --kill-on-bad-exit ("Terminated").
            while read -r line; do
                how=${line##*: }
                for t in $(df_task_list "$(sed -E 's/.*tasks? ([0-9,-]+):.*/\1/' <<< "$line")"); do
                    if [[ $how == Terminated ]]; then
                        echo "  task $t: stopped by --kill-on-bad-exit; log: $LOG_DIR/task_$t.log"
                    else
                        echo "  task $t FAILED: $how; log: $LOG_DIR/task_$t.log"
                        tail -n 5 "$LOG_DIR/task_$t.log" | sed 's/^/    | /'
                    fi
                done
            done < <(grep -E "^srun: error: .*: tasks? [0-9,-]+: " "$srun_log")
            echo "$DF_PROG: fix the cause shown above if a task failed on an error, then rerun the same" \
                "command (same GPUS; answered questions are skipped, failed ones asked again)"
        } >&2
        exit 1
    fi
    df_merge_and_score "$gpus"
}
