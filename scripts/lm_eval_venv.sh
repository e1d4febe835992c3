#!/usr/bin/env bash
# EleutherAI's lm-evaluation-harness in a venv of its own (runs/venv-lmeval), for
# tests/test_lm_eval.py: the harness drives kvserve's OpenAI door as it drives any server
# (`local-completions`), and its heavy dependencies stay out of kvserve's .venv.
# torch==2.13.0 is pinned so pip takes the CPU build on this disk rather than a CUDA one.
# Idempotent (a stamp names the pinned versions); never fails the caller: a venv that cannot
# be built leaves the test skipped with this script named as the fix.
# Usage: scripts/lm_eval_venv.sh [VENV_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
venv="${1:-runs/venv-lmeval}"
want="lm-eval[api]==0.4.13 torch==2.13.0 transformers==4.57.6"
stamp="$venv/.kvserve-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "==> installing lm-evaluation-harness into $venv (first time: a few minutes)"
# shellcheck disable=SC2086  # $want is a list of requirements
if python3 -m venv "$venv" && "$venv/bin/python" -m pip install --quiet --progress-bar off $want \
    >"$venv.log" 2>&1; then
  echo "$want" >"$stamp"
else
  echo "warning: could not install lm-evaluation-harness (see $venv.log); tests/test_lm_eval.py will be skipped" >&2
fi
exit 0
