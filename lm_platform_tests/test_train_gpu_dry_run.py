"""`python -m benchmarks.train_gpu --dry-run` builds and steps both sides (our trainer, HF Trainer) with a
tiny shape on CPU, so the GPU benchmark keeps working between the rare runs on a lent GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run_builds_both_sides_on_cpu():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_gpu", "--dry-run", "--warmup", "2", "--steps", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = done.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT name=train_gpu ")
    fields = dict(kv.split("=", 1) for kv in result.split()[1:])
    assert fields["dry_run"] == "true" and fields["shape"] == "tiny"
    assert float(fields["ours"]) > 0 and float(fields["peer"]) > 0 and "mfu" in fields
    # Same weights, same rows, fp32 eager on both sides: the same losses.
    assert float(fields["loss_max_abs_diff"]) < 1e-5
