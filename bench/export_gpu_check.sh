#!/usr/bin/env bash
# The CUDA export check, for a session that has a GPU lent (one short run, ~5 min on GPT-2
# small): exports fp16 and int8/int4 weight-only for --target cuda (the quality gate then runs
# on the CUDA provider by itself), and times them against fp32 on CUDA with the server's runner.
# Then checks the device-resident KV cache of each (bench/cuda_cache_check.py).
#   bash bench/export_gpu_check.sh CHECKPOINT_DIR [OUT_ROOT]   (results under OUT_ROOT/)
set -euo pipefail
ckpt=${1:?usage: export_gpu_check.sh CHECKPOINT_DIR [OUT_ROOT]}
out=${2:-${OUT:-/tmp/export_gpu_check}}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
built=()
for p in fp32 fp16 int8 int4; do  # a refused export is reported, the others still run
  if "$py" -m export "$ckpt" "$out/$p" --precision "$p" --target cuda --force \
      --gate-samples "${GATE_SAMPLES:-64}" >"$out/export_$p.log" 2>&1; then
    built+=("$out/$p")
  fi
  grep -v '^\[' "$out/export_$p.log" | tail -9
done
"$py" -m export bench "${built[@]}" --provider cuda --repeats 5 2>&1 | tee "$out/bench.log"
# the KV cache kept on the device (server/memory.py) vs in host memory, same logits, timed
for a in "${built[@]}"; do
  "$py" bench/cuda_cache_check.py "$a" 2>&1 | tee "$out/cache_$(basename "$a").log" || true
done
