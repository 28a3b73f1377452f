#!/usr/bin/env bash
# GPU check, on a machine with one NVIDIA GPU after `TARGET=gpu ./setup.sh` (CI never needs it):
#
#   perf/gpu_check.sh                           # ~10 min; WORK=/scratch/x keeps the run folder
#
# 1. the smoke config end to end with real vLLM: every model stage that can use vLLM (traces,
#    select_problems' samples, teacher scoring, evaluation, premise check) runs on it, in a scratch
#    folder, ending at the report;
# 2. vLLM against the transformers reference, top-k log-prob parity on the real default solver, in
#    fp32 and in bf16 (python -m pipeline.engines.parity).
# Prints each phase's time and the parity figures; exits non-zero when a phase fails. The smoke run's
# overlay is perf/gpu_check.yaml (one round). Knobs (env): PARITY_MODEL (a prepared
# model folder; default: the default solver, prepared here), PY and SNAKEMAKE (default: .venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
SNAKEMAKE=${SNAKEMAKE:-$ROOT/.venv/bin/snakemake}
WORK=${WORK:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$WORK"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

phase_start=$(date +%s)
total_start=$phase_start
phase() {  # phase <name>: print the time since the previous phase
    local now
    now=$(date +%s)
    echo "gpu_check: $1 took $((now - phase_start)) s"
    phase_start=$now
}

command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found; this check needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'EOF'
import torch, vllm
assert torch.cuda.is_available(), "torch sees no GPU: run TARGET=gpu ./setup.sh"
print(f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}), vllm {vllm.__version__}, {torch.cuda.get_device_name(0)}")
EOF

# 1. The smoke DAG with every sampling/scoring engine switched to vLLM.
"$SNAKEMAKE" -s "$ROOT/Snakefile" --directory "$WORK/smoke" --cores all --resources gpu=1 \
    --configfile "$ROOT/config/smoke.yaml" "$ROOT/perf/gpu_check.yaml"
"$PY" - "$WORK/smoke" <<'EOF'
import sys
from pathlib import Path
from pipeline.artifacts import read_metadata
run = Path(sys.argv[1])
assert (run / "results/report.html").stat().st_size > 0, "no report"
traces = read_metadata(run / "results/seed_0/traces/shared/round_0.parquet")["params"]
assert traces["engine"]["backend"] == "vllm", traces["engine"]
print(f"gpu_check: smoke DAG on vLLM ok, traces at {traces['stats']['tokens_per_s']} tok/s after a {traces['stats']['startup_s']} s start")
EOF
phase "smoke DAG on vLLM"

# 2. Top-k parity, fp32 and bf16, on the real default solver (or PARITY_MODEL).
if [ -z "${PARITY_MODEL:-}" ]; then
    "$SNAKEMAKE" -s "$ROOT/Snakefile" --directory "$WORK/models" --cores all \
        resources/models/qwen2.5-coder-0.5b-instruct
    PARITY_MODEL=$WORK/models/resources/models/qwen2.5-coder-0.5b-instruct
    phase "prepare the default solver"
fi
status=0
for dtype in float32 bfloat16; do
    "$PY" -m pipeline.engines.parity --model "$PARITY_MODEL" --dtype "$dtype" --json "$WORK/parity_$dtype.json" \
        || status=1
    phase "parity $dtype"
done

elapsed=$(( $(date +%s) - total_start ))
echo "gpu_check: total $elapsed s (target < 600 s); outputs in $WORK"
[ "$status" = 0 ] || { echo "gpu_check: parity FAILED (see the figures above)" >&2; exit 1; }
echo "gpu_check: OK"
