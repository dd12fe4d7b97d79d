#!/bin/bash
# train_zoom_mixed.sh [WORK_DIR] [--ship]        DRAFT (issue 18): its full run is the next session's
#
# The mixed zoom bench from scratch, on CPUs: local questions (a sign's glyph: only the crop reads it)
# and global ones (count, colour count, empty corner: only the whole image holds the evidence), both
# free form and multiple choice; an untrained tiny LLaVA-1.5 trained with dualfocus.train (every
# question with its box turn and micro turn; global questions' box = all their evidence), scored per
# kind with the real runner. Deterministic given SEED on one machine and thread count (as
# train_zoom_toy.sh, whose shipped run was rebuilt bit for bit).
# Expected on 2 CPU cores: ~53 min (bench ~3, training ~48: ~126,000 records, 7,900 steps at
# train_zoom_toy.sh's measured 2.75 steps/s, which a one-thread A/B measured the mixed mix to match;
# evaluation ~2). LOOKUPS=0: ~44 min. docs/zoom.md, "The mixed bench".
# --ship copies the checkpoint and the held-out set into the repository (checkpoints/dualfocus-zoom-tiny,
# playground/zoom), where `python -m dualfocus.demo` reads them.
#
# WORK_DIR (default: zoom_mixed_work): data/, init/, checkpoint/, eval/ (summary.json with "kinds").
# Environment: SEED (0), N_TRAIN (7500 local scenes of 1-3 signs: ~15,000 questions, 5 records each),
# N_TRAIN_GLOBAL (3000 global scenes: 9,000 questions, 3 records each), N_TEST / N_TEST_GLOBAL (100 each:
# 300 questions per kind and format), LOOKUPS (1: text-only option-lookup records per training question, answer -> letter;
# see bench.py), EPOCHS (1), LR (5e-4), BATCH (16), PYTHON (python).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

WORK=zoom_mixed_work
SHIP=0
for arg in "$@"; do
    case $arg in
        --ship) SHIP=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "train_zoom_mixed.sh: unknown option $arg" >&2; exit 2 ;;
        *) WORK=$arg ;;
    esac
done
SEED=${SEED:-0} N_TRAIN=${N_TRAIN:-7500} N_TRAIN_GLOBAL=${N_TRAIN_GLOBAL:-3000}
N_TEST=${N_TEST:-100} N_TEST_GLOBAL=${N_TEST_GLOBAL:-100} LOOKUPS=${LOOKUPS:-1}
PY=${PYTHON:-python}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
started=$(date +%s)

echo "== 1/4 bench: $N_TRAIN + $N_TRAIN_GLOBAL training and $N_TEST + $N_TEST_GLOBAL held-out scenes (local + global), seed $SEED"
"$PY" -m dualfocus.zoom.bench --out "$WORK/data" --kinds local,global --seed "$SEED" \
    --n-train "$N_TRAIN" --n-test "$N_TEST" --n-train-global "$N_TRAIN_GLOBAL" --n-test-global "$N_TEST_GLOBAL" \
    --lookups "$LOOKUPS"

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

echo "== 4/4 held-out evaluation, per kind -> $WORK/eval"
"$PY" -m dualfocus.zoom.evaluate --model-path "$WORK/checkpoint" --data "$WORK/data" --out "$WORK/eval"

if [ "$SHIP" = 1 ]; then
    "$PY" -m dualfocus.zoom.ship --checkpoint "$WORK/checkpoint" --data "$WORK/data" --eval "$WORK/eval"
fi
echo "done in $(( ($(date +%s) - started) / 60 )) min"
