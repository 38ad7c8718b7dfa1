#!/usr/bin/env bash
# The device check for one lent GPU, in one go (about six minutes on an H100): installs the wheels the
# image lacks from WHEELS (default .gpu-wheels, see scripts/gpu_wheels.sh) without network, runs
# `benchmarks.train_gpu` (ours vs HF Trainer, SmolLM2-360M and Llama-3.2-1B shapes, seq 2048, bf16; its
# RESULT line carries mfu and ratio), then the trainer's resume smoke test on one process.
#
#     scripts/gpu_check.sh 2>&1 | tee gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
WHEELS=${WHEELS:-.gpu-wheels}
if ! "$PY" -c 'import pydantic, dagster_pipes, pyarrow, sentencepiece' 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" pydantic dagster-pipes pyarrow sentencepiece
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 300 "$PY" -m benchmarks.train_gpu --steps "${STEPS:-15}"
NPROC=1 timeout 120 scripts/gpu_smoke.sh
