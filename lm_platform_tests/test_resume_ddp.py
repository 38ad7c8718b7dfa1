"""Resume after SIGKILL ends bit-equal to an uninterrupted run; DDP on 2 CPU processes (gloo) matches one
process with the same global batch. Both run the trainer as a real process, as Dagster launches it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from lm_platform.training.checkpoint import step_dirs
from lm_platform_tests.training_fixtures import (
    launch_command,
    load_weights,
    make_job,
    synthetic_dataset,
    write_job,
)

VOCAB = 96
MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "max_position_embeddings": 128,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


def _trainer(job_file: Path, nproc: int = 1) -> list[str]:
    return launch_command(job_file, nproc)


def _job(tmp: Path, name: str, data: Path, **train):
    init = {"kind": "scratch", "model": MODEL}
    return make_job(tmp / name, name, data, tmp / "tok", init, **train)


def test_run_killed_mid_stage_resumes_and_ends_bit_equal(tmp_path):
    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=160, seq_len=32)
    (tmp_path / "tok").mkdir()
    settings = dict(
        micro_batch_size=4,
        grad_accum=2,
        epochs=2,
        lr=3e-3,
        warmup_steps=3,
        checkpoint_every=5,
        keep_last=2,
        weight_decay=0.1,
    )
    # Uninterrupted reference.
    ref = _job(tmp_path, "ref", data, **settings)
    subprocess.run(
        _trainer(write_job(ref, tmp_path / "ref.json")), env=_env(), check=True, capture_output=True
    )
    # The same stage, killed with SIGKILL once its second checkpoint is on disk.
    job = _job(tmp_path, "run", data, **settings)
    job_file = write_job(job, tmp_path / "run.json")
    proc = subprocess.Popen(_trainer(job_file), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = Path(job["run_dir"])
    deadline = time.monotonic() + 300
    while not any(step >= 10 for step, _ in step_dirs(run_dir)):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = step_dirs(run_dir)[-1][0]
    assert not Path(job["output_dir"]).exists(), "the run finished before the kill; the test proves nothing"
    assert killed_at < 40
    # Started again with the same job, it continues from the newest checkpoint.
    done = subprocess.run(_trainer(job_file), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from step_{killed_at:08d}" in done.stdout
    import json

    metrics = json.loads((Path(job["output_dir"]) / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["steps_run"] == 40 - killed_at
    assert [r["step"] for r in metrics["curve"]] == list(range(1, 41))
    a, b = load_weights(Path(ref["output_dir"])), load_weights(Path(job["output_dir"]))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    # Last K kept, no partial checkpoint left behind.
    assert [s for s, _ in step_dirs(run_dir)] == [35, 40]
    assert not list(run_dir.glob(".tmp-*"))


def test_ddp_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=64, seq_len=32)
    (tmp_path / "tok").mkdir()
    common = dict(grad_accum=2, epochs=1, lr=3e-3, warmup_steps=2, weight_decay=0.1)
    single = _job(tmp_path, "single", data, micro_batch_size=4, **common)
    ddp = _job(tmp_path, "ddp", data, micro_batch_size=2, nproc_per_node=2, **common)
    for job, nproc in ((single, 1), (ddp, 2)):
        done = subprocess.run(
            _trainer(write_job(job, tmp_path / f"{job['stage']}.json"), nproc),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
    import json

    m1 = json.loads((Path(single["output_dir"]) / "metrics.json").read_text())
    m2 = json.loads((Path(ddp["output_dir"]) / "metrics.json").read_text())
    assert m2["processes"] == 2 and m1["steps"] == m2["steps"] == 8
    assert m1["tokens_seen"] == m2["tokens_seen"]
    for r1, r2 in zip(m1["curve"], m2["curve"], strict=True):
        assert abs(r1["loss"] - r2["loss"]) < 1e-4, (r1, r2)
    a, b = load_weights(Path(single["output_dir"])), load_weights(Path(ddp["output_dir"]))
    start = load_weights_at_init(tmp_path)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), name
        assert not torch.equal(a[name], start[name])  # both actually trained every tensor


def load_weights_at_init(tmp_path: Path) -> dict:
    from lm_platform.modeling.init import build_model

    return build_model({"kind": "scratch", "model": MODEL}, VOCAB, 1, 2, 3, 0).state_dict()


def test_a_finished_stage_trains_afresh_when_run_again(tmp_path):
    from lm_platform.training.train import Reporter, train

    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=24, seq_len=16)
    (tmp_path / "tok").mkdir()
    job = make_job(
        tmp_path,
        "again",
        data,
        tmp_path / "tok",
        {"kind": "scratch", "model": MODEL},
        micro_batch_size=4,
        epochs=1,
        checkpoint_every=2,
        keep_last=3,
    )
    first = train(job, Reporter())
    weights = load_weights(Path(job["output_dir"]))
    second = train(job, Reporter())
    assert first["steps_run"] == second["steps_run"] == 6 and second["resumed_from"] is None
    assert [s for s, _ in step_dirs(job["run_dir"])] == [2, 4, 6]
    for name, value in load_weights(Path(job["output_dir"])).items():
        assert torch.equal(value, weights[name])  # deterministic: the same stage gives the same weights
