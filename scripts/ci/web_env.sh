#!/usr/bin/env bash
# The web environment tests/test_web.py drives the page from: the package with its [web] extra
# (Gradio) and Playwright, in a venv over the main environment (--system-site-packages: torch comes
# from there; Gradio's own pins, e.g. Pillow < 13, stay out of the main environment). The browser is
# Debian's chromium (--install: apt-get it); Playwright drives it, so `playwright install` never runs.
# Prints the exports; use: eval "$(bash scripts/ci/web_env.sh [--install] [DIR])". DIR: .ci-cache.
set -euo pipefail
if [ "${1:-}" = "--install" ]; then
  shift
  if ! command -v chromium >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2
  fi
fi
dir=$(mkdir -p "${1:-.ci-cache}" && cd "${1:-.ci-cache}" && pwd)
python=${PYTHON:-python}
repo=$(cd "$(dirname "$0")/../.." && pwd)

if [ ! -f "$dir/web/.done" ]; then
  rm -rf "$dir/web"
  "$python" -m venv --system-site-packages "$dir/web"
  "$dir/web/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[web]" playwright >&2
  touch "$dir/web/.done"
fi
echo "export DUALFOCUS_WEB_PYTHON=$dir/web/bin/python"
echo "export DUALFOCUS_CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)"
