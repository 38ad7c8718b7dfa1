"""FSDP2 on 2 CPU processes (gloo): it trains like DDP, its checkpoints resume bit-exact on the same number
of processes and on another one with the same rows per step, and EEVE's frozen rows stay bit-identical
under sharding and under activation checkpointing. The trainer runs as a real process (the launcher in
front of torchrun), as Dagster launches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import torch

from lm_platform.training.checkpoint import step_dirs
from lm_platform.training.contract import FINISHED_FILE
from lm_platform_tests.training_fixtures import (
    launch_command,
    load_weights,
    make_job,
    synthetic_dataset,
    synthetic_eeve,
    tiny_checkpoint,
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
# fp32 on CPU: FSDP reduce-scatters where DDP all-reduces, so sums run in another order; and under DDP
# the loss goes through the chunked output head (`training/loss.py`), under FSDP through the full logits
# (the head is sharded), another order of sums again. Losses agree to 5e-7. Weights after 8 AdamW steps at
# lr 3e-3 (each element moves by up to 2.4e-2) differ by at most 2.2e-5 (measured): Adam divides each
# gradient by its own running scale, so an element whose gradient is near zero moves by an amount its
# rounding noise decides. 1e-4 is 0.4 % of the largest move; a wrong reduction or scale is far beyond.
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = dict(atol=1e-4, rtol=1e-4)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


def _run(job: dict, tmp: Path, nproc: int) -> dict:

    job_file = write_job(job, tmp / f"{job['stage']}.{nproc}.json")
    done = subprocess.run(
        launch_command(job_file, nproc), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((Path(job["output_dir"]) / "metrics.json").read_text())


def _rewind(job: dict, to_step: int) -> None:
    """Leave the run directory as a run killed after its step `to_step` checkpoint would (no later
    checkpoints, not finished, no export)."""
    run_dir = Path(job["run_dir"])
    for step, path in step_dirs(run_dir):
        if step > to_step:
            shutil.rmtree(path)
    (run_dir / FINISHED_FILE).unlink()
    shutil.rmtree(job["output_dir"])


def test_fsdp_matches_ddp_and_resumes_bit_exact_on_two_processes_and_on_one(tmp_path):
    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=64, seq_len=32)
    (tmp_path / "tok").mkdir()
    init = {"kind": "scratch", "model": MODEL}
    common = dict(micro_batch_size=2, grad_accum=2, epochs=1, lr=3e-3, warmup_steps=2, checkpoint_every=4)
    ddp = make_job(tmp_path / "ddp", "s", data, tmp_path / "tok", init, nproc_per_node=2, **common)
    fsdp = make_job(
        tmp_path / "fsdp", "s", data, tmp_path / "tok", init, nproc_per_node=2, parallelism="fsdp", **common
    )
    m_ddp, m_fsdp = _run(ddp, tmp_path, 2), _run(fsdp, tmp_path, 2)
    assert m_fsdp["processes"] == 2 and m_ddp["steps"] == m_fsdp["steps"] == 8
    assert m_fsdp["layout"] == "fsdp" and m_ddp["layout"] == "replicated"
    for a, b in zip(m_ddp["curve"], m_fsdp["curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) < LOSS_TOLERANCE, (a, b)
    w_ddp, w_fsdp = load_weights(Path(ddp["output_dir"])), load_weights(Path(fsdp["output_dir"]))
    assert w_ddp.keys() == w_fsdp.keys()
    for name in w_ddp:
        assert torch.allclose(w_ddp[name], w_fsdp[name], **WEIGHT_TOLERANCE), name
    config = json.loads((Path(fsdp["output_dir"]) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # not FSDP2's wrapper class

    # Killed after step 4 (simulated: later checkpoints removed), run again on 2 processes: bit-exact.
    saved = tmp_path / "fsdp-run-copy"
    shutil.copytree(fsdp["run_dir"], saved)
    _rewind(fsdp, 4)
    resumed = _run(fsdp, tmp_path, 2)
    assert resumed["resumed_from"] == "step_00000004" and resumed["steps_run"] == 4
    for name, value in load_weights(Path(fsdp["output_dir"])).items():
        assert torch.equal(value, w_fsdp[name]), f"{name} differs after resuming on 2 processes"

    # The same checkpoint on 1 process, with the same rows per step (micro 2 x accum 4 x 1 process).
    shutil.rmtree(fsdp["run_dir"])
    shutil.copytree(saved, fsdp["run_dir"])
    _rewind(fsdp, 4)
    one = {**fsdp, "train": {**fsdp["train"], "nproc_per_node": 1, "grad_accum": 4}}
    m_one = _run(one, tmp_path, 1)
    assert m_one["resumed_from"] == "step_00000004" and m_one["processes"] == 1
    assert [r["step"] for r in m_one["curve"]] == list(range(1, 9))
    for a, b in zip(m_fsdp["curve"][4:], m_one["curve"][4:], strict=True):
        assert abs(a["loss"] - b["loss"]) < LOSS_TOLERANCE, (a, b)
    for name, value in load_weights(Path(one["output_dir"])).items():
        assert torch.allclose(value, w_fsdp[name], **WEIGHT_TOLERANCE), name


def _eeve_job(tmp: Path, name: str, **train) -> dict:
    base_vocab, new = 64, 12
    if not (tmp / "base").exists():
        tiny_checkpoint(tmp / "base", base_vocab)
        synthetic_eeve(tmp / "tok", base_vocab, new)
        synthetic_dataset(tmp / "data", base_vocab + new, rows=32, seq_len=16)
    init = {"kind": "pretrained", "path": str(tmp / "base")}
    common = dict(micro_batch_size=2, epochs=1, lr=1e-2, trainable="new_embeddings", weight_decay=0.1)
    return make_job(tmp / name, name, tmp / "data", tmp / "tok", init, **common, **train)


def _assert_only_new_rows_moved(tmp: Path, job: dict) -> None:
    from lm_platform.modeling.init import build_model

    init = {"kind": "pretrained", "path": str(tmp / "base")}
    start = build_model(init, 64 + 12, 1, 2, 3, 0, str(tmp / "tok")).state_dict()
    out = load_weights(Path(job["output_dir"]))
    for name, value in out.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(value[:64], start[name][:64]), f"{name}: a frozen base row moved"
            assert not torch.equal(value[64:], start[name][64:]), f"{name}: the new rows did not train"
        else:
            assert torch.equal(value, start[name]), f"{name} is frozen and moved"


def test_eeve_frozen_rows_stay_bit_identical_under_fsdp(tmp_path):
    job = _eeve_job(tmp_path, "fsdp", nproc_per_node=2, parallelism="fsdp", activation_checkpointing="full")
    metrics = _run(job, tmp_path, 2)
    assert metrics["processes"] == 2 and metrics["steps"] == 8
    assert metrics["layout"] == "fsdp, checkpointing full"
    _assert_only_new_rows_moved(tmp_path, job)


def test_activation_checkpointing_changes_no_gradient_and_keeps_frozen_rows(tmp_path):
    from lm_platform.training.train import Reporter, train

    plain = _eeve_job(tmp_path, "plain")
    train(plain, Reporter())
    for mode in ("full", "selective"):
        job = _eeve_job(tmp_path, mode, activation_checkpointing=mode)
        train(job, Reporter())
        _assert_only_new_rows_moved(tmp_path, job)
        a, b = load_weights(Path(plain["output_dir"])), load_weights(Path(job["output_dir"]))
        for name in a:  # recomputation runs the same ops on the same inputs
            assert torch.equal(a[name], b[name]), f"{mode}: {name} differs from the run without it"
