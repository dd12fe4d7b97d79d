#!/usr/bin/env bash
# One call on a lent GPU, at most 8 minutes: a CUDA-graph smoke check, then the pipeline benchmark
# at real 7B and 13B shapes (random fp16 weights, forced output lengths), the model's own box, and
# 7B over two GPUs when two are visible. Logs and JSON go to $OUT (the device tool's folder) or /tmp.
# Each step has its own time limit (seconds; override with LIMIT_*), summing to <= 470 s.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
log() { grep -v '^\[transformers\]' | tee "$out/$1.log"; }
run() {  # name, time limit, preset, extra args
  local name=$1 limit=$2 preset=$3; shift 3
  timeout "$limit" python benchmarks/bench_pipeline.py --preset "$preset" --device cuda \
    --static-decode "$static" --json "$out/bench_$name.json" "$@" 2>&1 | log "bench_$name"
}
static=graph
timeout "${LIMIT_CHECK:-40}" python benchmarks/check_cuda_static.py 2>&1 | log check_cuda_static \
  || { static=off; echo "CUDA graph check failed or timed out: timing static_decode=off"; }
run 7b "${LIMIT_7B:-190}" 7b --batch-sizes 1 8 32 64 --batches 2 --reference-questions 3 --check --breakdown
run 7b_own_box "${LIMIT_OWN:-40}" 7b --batch-sizes 1 --batches 2 --reference-questions 1 --own-box
run 7b_b64_eager "${LIMIT_EAGER:-40}" 7b --batch-sizes 64 --batches 1 --reference-questions 1 --static-decode off
run 13b "${LIMIT_13B:-100}" 13b --batch-sizes 1 8 32 --batches 1 --reference-questions 2
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  run 7b_2gpu "${LIMIT_2GPU:-60}" 7b-2gpu --batch-sizes 32 64 --batches 1 --reference-questions 1
else
  echo "7b-2gpu: skipped, one GPU visible"
fi
