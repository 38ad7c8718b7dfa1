#!/usr/bin/env bash
# GPU smoke test of the trainer; not part of `make test` (CI has no accelerator). Needs NPROC CUDA GPUs
# (default: all visible, at least 1), a CUDA build of torch and this repository importable (run from the
# repository root, or set PY):
#
#     scripts/gpu_smoke.sh                       # WORK=/tmp/... to keep the outputs
#     NPROC=1 PARALLELISM=fsdp scripts/gpu_smoke.sh
#     WHEELS=/path/to/wheels scripts/gpu_smoke.sh   # an image without pydantic/dagster-pipes: installed
#                                                 # offline from that folder first (scripts/gpu_wheels.sh)
#
# What it runs: a small Llama on a synthetic packed dataset, NPROC processes with NCCL (torchrun), bf16
# autocast, a few dozen steps with step checkpoints; the same stage again, killed with SIGKILL once
# its second checkpoint is on disk, then resumed; a third run stopped with SIGTERM (the trainer writes a
# checkpoint at the last completed step and exits 75), then resumed. It checks that both resumed runs
# end at the planned step from the checkpoint they were stopped at, that the export is in the job's
# dtype (bf16) while step checkpoints are fp32, and prints the largest weight difference to the
# uninterrupted run (0 when the GPU kernels are deterministic; bf16 attention backward may not be).
# PARALLELISM (ddp|fsdp), COMPILE (true|false) and CHECKPOINTING (none|full|selective) set the stage's
# options of the same names.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
WORK=${WORK:-$(mktemp -d)}
NPROC=${NPROC:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}
export NPROC PARALLELISM=${PARALLELISM:-ddp} COMPILE=${COMPILE:-true} CHECKPOINTING=${CHECKPOINTING:-none}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -n "${WHEELS:-}" ] && ! "$PY" -c 'import pydantic, dagster_pipes' 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" pydantic dagster-pipes
fi
echo "work dir $WORK; $NPROC process(es), parallelism $PARALLELISM, compile $COMPILE, checkpointing $CHECKPOINTING"

"$PY" - "$WORK" <<'EOF'
import os
import sys
from pathlib import Path

import torch

from lm_platform_tests.training_fixtures import make_job, synthetic_dataset, write_job

nproc = int(os.environ["NPROC"])
assert torch.cuda.device_count() >= nproc, f"needs {nproc} GPUs, found {torch.cuda.device_count()}"
work = Path(sys.argv[1])
data = synthetic_dataset(work / "data", 512, rows=4096, seq_len=256)
(work / "tok").mkdir(exist_ok=True)
model = {"hidden_size": 256, "intermediate_size": 768, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4,
         "max_position_embeddings": 256, "rope_theta": 10000.0, "tie_word_embeddings": True}
for name in ("ref", "kill", "term"):
    job = make_job(work / name, name, data, work / "tok", {"kind": "scratch", "model": model},
                   micro_batch_size=8, grad_accum=2, nproc_per_node=nproc, lr=1e-3, warmup_steps=5,
                   token_budget=60 * nproc * 2 * 8 * 256, checkpoint_every=10, log_every=5,
                   parallelism=os.environ["PARALLELISM"], compile=os.environ["COMPILE"] == "true",
                   activation_checkpointing=os.environ["CHECKPOINTING"])
    job["model"]["dtype"] = "bfloat16"
    write_job(job, work / f"{name}.json")
EOF

run() { "$PY" -m lm_platform.training.launch --nproc_per_node="$NPROC" --job "$1"; }  # torchrun behind the launcher
wait_for_step() {  # run dir, step: wait until a step checkpoint at or beyond it exists
  for _ in $(seq 1 1200); do
    ls -d "$1"/step_* >/dev/null 2>&1 && [ "$(ls -d "$1"/step_* | sed 's/.*step_0*//' | sort -n | tail -1)" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "no step $2 checkpoint in $1" >&2; return 1
}

echo "== uninterrupted"; run "$WORK/ref.json"

echo "== SIGKILL after the second checkpoint, then resume"
setsid "$PY" -m lm_platform.training.launch --nproc_per_node="$NPROC" --job "$WORK/kill.json" & pid=$!
wait_for_step "$WORK/kill/checkpoint/kill.run" 20
kill -KILL -- -"$pid" || true; wait "$pid" || true
run "$WORK/kill.json" | tee "$WORK/kill.resume.log"
grep -q "resumed from step_" "$WORK/kill.resume.log"

echo "== SIGTERM mid-run: checkpoint at the last completed step, exit 75, then resume"
setsid "$PY" -m lm_platform.training.launch --nproc_per_node="$NPROC" --job "$WORK/term.json" & pid=$!
wait_for_step "$WORK/term/checkpoint/term.run" 10
sleep 2
kill -TERM "$pid" || true  # the launcher only, as a pod's PID 1 gets it
set +e; wait "$pid"; rc=$?; set -e
echo "launcher exit status after SIGTERM: $rc"
[ "$rc" -eq 75 ] || { echo "expected 75 (preempted) from the launcher" >&2; exit 1; }
run "$WORK/term.json" | tee "$WORK/term.resume.log"
grep -q "resumed from step_" "$WORK/term.resume.log"

"$PY" - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

from safetensors.torch import load_file

work = Path(sys.argv[1])
ref = load_file(str(work / "ref/checkpoint/ref/model.safetensors"))
for name in ("kill", "term"):
    out = work / name / "checkpoint" / name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["curve"][-1]["step"] == 60, metrics["steps"]
    got = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in got.values()} == {ref[next(iter(ref))].dtype}
    last = sorted((work / name / "checkpoint" / f"{name}.run").glob("step_*"))[-1]
    assert str(next(iter(load_file(str(last / "model.safetensors")).values())).dtype) == "torch.float32"
    diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
    print(f"{name}: resumed run ends {'bit-equal' if diff == 0 else f'max |diff| {diff:.3g}'} to the uninterrupted run; "
          f"val loss {metrics['initial_val_loss']:.3f} -> {metrics['final_val_loss']:.3f}, "
          f"{metrics['tokens_per_second']:,.0f} tok/s, export {metrics['export_dtype']}")
    assert diff < 0.05, diff
print("GPU SMOKE OK")
EOF
