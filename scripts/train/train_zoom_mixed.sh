#!/bin/bash
# train_zoom_mixed.sh [WORK_DIR] [--ship]
#
# The shipped zoom model from scratch, on CPUs: the mixed zoom bench (local questions: a sign's glyph,
# only the crop reads it; global ones: count, colour count, empty corner, only the whole image holds
# the evidence), both free form and multiple choice; an untrained tiny LLaVA-1.5 trained with
# dualfocus.train (every question with its box turn and micro turn; global questions' box = all their
# evidence), scored per kind with the real runner. Deterministic given SEED on one machine and thread
# count (as train_zoom_toy.sh, whose shipped run was rebuilt bit for bit).
# Measured on 2 CPU cores: 46 min (bench and untrained model 4, training 43: 118,410 records, 7,401
# steps; evaluation 1).
# --ship copies the checkpoint and the held-out set into the repository (checkpoints/dualfocus-zoom-tiny,
# playground/zoom), where `python -m dualfocus.demo` reads them. docs/zoom.md, "The mixed bench".
#
# WORK_DIR (default: zoom_mixed_work): data/, init/, checkpoint/, eval/ (summary.json with "kinds").
# Environment: SEED (0), N_TRAIN (10000 local scenes of 1-3 signs: ~20,000 questions, 5 records each),
# N_TRAIN_GLOBAL (2000 global scenes: 6,000 questions, 3 records each), N_TEST / N_TEST_GLOBAL (100 each:
# 300 questions per kind and format), LOOKUPS (0; K: K text-only option-lookup records per training
# question, answer -> letter; see bench.py), EPOCHS (1), LR (5e-4), BATCH (16), PYTHON (python).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 0 ;; esac
# The same steps as the local bench's recipe, on the mixed bench with its sizes.
export KINDS=local,global N_TRAIN=${N_TRAIN:-10000} N_TRAIN_GLOBAL=${N_TRAIN_GLOBAL:-2000} LOOKUPS=${LOOKUPS:-0}
export DEFAULT_WORK=zoom_mixed_work
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_zoom_toy.sh" "$@"
