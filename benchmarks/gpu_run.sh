#!/usr/bin/env bash
# One call on a lent GPU: the pipeline benchmark at real 7B and 13B shapes (random fp16 weights,
# forced output lengths). Logs and JSON go to $OUT (the device tool's folder) or /tmp.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
run() {  # preset, time limit, extra args
  local preset=$1 limit=$2; shift 2
  timeout "$limit" python benchmarks/bench_pipeline.py --preset "$preset" --device cuda \
    --json "$out/bench_$preset.json" "$@" 2>&1 | grep -v '^\[transformers\]' | tee "$out/bench_$preset.log"
}
run 7b "${LIMIT_7B:-240}" --batch-sizes 1 8 32 64 --batches 2 --reference-questions 3 --check --breakdown
run 13b "${LIMIT_13B:-100}" --batch-sizes 1 8 32 --batches 1 --reference-questions 2
