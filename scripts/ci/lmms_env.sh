#!/usr/bin/env bash
# The side environment tests/test_lmms_eval.py runs the real lmms-eval in (nothing of it is
# committed). Prints the export; use: eval "$(bash scripts/ci/lmms_env.sh)".
#   lmms   a venv over the main environment (--system-site-packages: torch, transformers come from
#          there) with this package's `lmms` extra installed editable under
#          scripts/ci/lmms_constraints.txt, so the CPU torch stays; then torchvision (pulled in by
#          lmms-eval) is removed: PyPI's build bundles CUDA libraries and cannot load its operators
#          against a CPU torch ("operator torchvision::nms does not exist" on `lmms-eval` start), the
#          CPU build is only on download.pytorch.org, and neither lmms-eval's core nor our tasks need it
# DIR (default .ci-cache, git-ignored) keeps it between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=$(mkdir -p "${1:-.ci-cache}" && cd "${1:-.ci-cache}" && pwd)
python=${PYTHON:-python}
env="$dir/lmms"

if [ ! -f "$env/.done" ]; then
  rm -rf "$env"
  "$python" -m venv --system-site-packages "$env"
  "$env/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c scripts/ci/lmms_constraints.txt -e ".[lmms]" >&2
  "$env/bin/python" -m pip uninstall --quiet --yes torchvision >&2
  touch "$env/.done"
fi
echo "export DUALFOCUS_LMMS_PYTHON=$env/bin/python"
