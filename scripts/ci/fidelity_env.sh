#!/usr/bin/env bash
# The side environments tests/test_fidelity.py compares against, built from the package indexes
# (nothing of theirs is committed). Prints the exports; use: eval "$(bash scripts/ci/fidelity_env.sh)".
#   tf431      transformers 4.31.0, tokenizers 0.13.3, sentencepiece 0.1.99 (the release's pins) and
#              LLaVA-1.5's code (llava-torch 1.1.1, without its dependencies); torch comes from the
#              main environment (--system-site-packages), the pinned packages shadow the newer ones
#   protobuf6  the main environment with protobuf 6.x in front (lmms-eval's wandb needs < 7)
#   npm        llama-tokenizer-js 1.2.2 (MIT): Llama-2's vocabulary and merges
# DIR (default .ci-cache, git-ignored) keeps them between runs.
set -euo pipefail
dir=$(mkdir -p "${1:-.ci-cache}" && cd "${1:-.ci-cache}" && pwd)
python=${PYTHON:-python}
pip_quiet=(--quiet --disable-pip-version-check)

if [ ! -f "$dir/tf431/.done" ]; then
  rm -rf "$dir/tf431"
  "$python" -m venv --system-site-packages "$dir/tf431"
  "$dir/tf431/bin/python" -m pip install "${pip_quiet[@]}" transformers==4.31.0 tokenizers==0.13.3 \
    sentencepiece==0.1.99 >&2
  "$dir/tf431/bin/python" -m pip install "${pip_quiet[@]}" --no-deps llava-torch==1.1.1 >&2
  touch "$dir/tf431/.done"
fi
if [ ! -f "$dir/protobuf6/.done" ]; then
  rm -rf "$dir/protobuf6"
  "$python" -m venv --system-site-packages "$dir/protobuf6"
  "$dir/protobuf6/bin/python" -m pip install "${pip_quiet[@]}" "protobuf>=6,<7" >&2
  touch "$dir/protobuf6/.done"
fi
js="$dir/npm/package/llama-tokenizer.js"
if [ ! -f "$js" ]; then
  rm -rf "$dir/npm" && mkdir -p "$dir/npm"
  (cd "$dir/npm" && npm pack --silent llama-tokenizer-js@1.2.2 >/dev/null && tar xzf llama-tokenizer-js-1.2.2.tgz)
fi
echo "export DUALFOCUS_TF431_PYTHON=$dir/tf431/bin/python"
echo "export DUALFOCUS_PROTOBUF6_PYTHON=$dir/protobuf6/bin/python"
echo "export DUALFOCUS_LLAMA_TOKENIZER_JS=$js"
