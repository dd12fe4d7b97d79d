#!/bin/bash
# train_zoom_toy.sh [WORK_DIR] [--ship]
#
# The zoom-bench proof from scratch, on CPUs: generate the bench, build an untrained tiny LLaVA-1.5,
# train it with dualfocus.train (box turns, micro turns on the crop, macro answers, "Where are the signs?"; every part,
# the vision tower included), and score it on the held-out questions with the real runner.
# 42 minutes on 2 CPU cores (bench 3, training 38, evaluation 1). Deterministic given SEED on one machine and thread count
# (a rerun wrote the shipped checkpoint bit for bit).
# --ship copies the checkpoint and the held-out set into the repository (checkpoints/dualfocus-zoom-tiny,
# playground/zoom), where `python -m dualfocus.demo` reads them.
#
# WORK_DIR (default: zoom_work): data/ (the bench), init/ (untrained), checkpoint/ (trained), eval/.
# Environment: SEED (0: the bench and the weights), N_TRAIN (10000 scenes of 1-3 signs, 5 records
# per sign), N_TEST (100 scenes of 3 signs: 300 questions per format), EPOCHS (1), LR (5e-4),
# BATCH (16), PYTHON (python). KINDS (local): local,global is the mixed bench, run by
# train_zoom_mixed.sh with its own defaults (N_TRAIN_GLOBAL, N_TEST_GLOBAL, LOOKUPS are read then).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

WORK=${DEFAULT_WORK:-zoom_work}
SHIP=0
for arg in "$@"; do
    case $arg in
        --ship) SHIP=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "$(basename "$0"): unknown option $arg" >&2; exit 2 ;;
        *) WORK=$arg ;;
    esac
done
SEED=${SEED:-0} N_TRAIN=${N_TRAIN:-10000} N_TEST=${N_TEST:-100} KINDS=${KINDS:-local}
PY=${PYTHON:-python}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
started=$(date +%s)
bench_args=(--out "$WORK/data" --n-train "$N_TRAIN" --n-test "$N_TEST" --seed "$SEED")
if [ "$KINDS" != local ]; then  # the mixed bench: global scenes and option-lookup records too
    bench_args+=(--kinds "$KINDS" --n-train-global "${N_TRAIN_GLOBAL:-3000}" --n-test-global "${N_TEST_GLOBAL:-100}"
                 --lookups "${LOOKUPS:-1}")
fi

echo "== 1/4 bench ($KINDS): $N_TRAIN training and $N_TEST held-out scenes, seed $SEED -> $WORK/data"
"$PY" -m dualfocus.zoom.bench "${bench_args[@]}"

echo "== 2/4 untrained model -> $WORK/init"
"$PY" -m dualfocus.zoom.model --bench "$WORK/data" --out "$WORK/init" --seed "$SEED"

echo "== 3/4 training -> $WORK/checkpoint (log: $WORK/train.log)"
rm -rf "$WORK/checkpoint"
"$PY" -m dualfocus.train.train \
    --model_name_or_path "$WORK/init" \
    --version v1 \
    --data_path "$WORK/data/train.json" \
    --image_folder "$WORK/data" \
    --image_aspect_ratio pad \
    --process_sub_area True \
    --tune_vit True \
    --output_dir "$WORK/checkpoint" \
    --num_train_epochs "${EPOCHS:-1}" \
    --per_device_train_batch_size "${BATCH:-16}" \
    --learning_rate "${LR:-5e-4}" --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type constant_with_warmup \
    --logging_steps 100 --disable_tqdm True \
    --save_strategy no \
    --model_max_length 512 \
    --dataloader_num_workers 0 \
    --report_to none \
    --use_cpu True \
    --seed "$SEED" --data_seed "$SEED" \
    > "$WORK/train.log" 2>&1 || { tail -20 "$WORK/train.log" >&2; echo "training failed: see $WORK/train.log" >&2; exit 1; }
grep -E "'loss'|train_runtime" "$WORK/train.log" | tail -5

echo "== 4/4 held-out evaluation -> $WORK/eval"
"$PY" -m dualfocus.zoom.evaluate --model-path "$WORK/checkpoint" --data "$WORK/data" --out "$WORK/eval"

if [ "$SHIP" = 1 ]; then
    "$PY" -m dualfocus.zoom.ship --checkpoint "$WORK/checkpoint" --data "$WORK/data" --eval "$WORK/eval"
fi
echo "done in $(( ($(date +%s) - started) / 60 )) min"
